//! Minerva engine: KV cache, sampling and the generation loop that applications embed.
