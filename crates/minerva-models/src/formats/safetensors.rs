//! Safetensors reader: one file or a sharded `model.safetensors.index.json`.
