//! o200k_harmony, gpt-oss's tokenizer, for checkpoints that ship no `tokenizer.json`
//! (OpenAI's original gpt-oss layout ships only `config.json` and weights).
//!
//! The vocabulary comes from `openai-harmony`'s encoding (local, hash-checked; see
//! `harmony::vocab`). It is turned into the same byte-level BPE description a GGUF file holds
//! — tokens spelled with GPT-2's byte characters, merges, the `gpt-4o` pre-tokenizer that
//! llama.cpp uses for o200k — and built by the GGUF tokenizer path, which is tested against
//! llama.cpp.

use std::collections::HashMap;

use super::{byte_to_char, gguf, Tokenizer, TokenizerError};
use crate::formats::gguf::{MetaValue, Metadata};
use crate::harmony::Harmony;

/// Ids from here up are special tokens (`<|startoftext|>` .. `<|reserved_201087|>`).
const FIRST_SPECIAL: u32 = 199_998;
const VOCAB_SIZE: u32 = 201_088;

/// gpt-oss's tokenizer, built from the harmony encoding's vocabulary.
pub(crate) fn o200k_harmony(harmony: &Harmony) -> Result<Tokenizer, TokenizerError> {
    let bad = |e: crate::ModelError| TokenizerError::meta("o200k_harmony", e.to_string());
    let mut ranks: HashMap<Vec<u8>, u32> = HashMap::with_capacity(FIRST_SPECIAL as usize);
    let mut bytes: Vec<Vec<u8>> = Vec::with_capacity(VOCAB_SIZE as usize);
    for id in 0..VOCAB_SIZE {
        let b = harmony.token_bytes(id).map_err(bad)?;
        if id < FIRST_SPECIAL {
            ranks.insert(b.clone(), id);
        }
        bytes.push(b);
    }
    let mut tokens = Vec::with_capacity(bytes.len());
    let mut types = Vec::with_capacity(bytes.len());
    let mut merges = Vec::new();
    for (id, b) in bytes.iter().enumerate() {
        let special = id as u32 >= FIRST_SPECIAL;
        tokens.push(MetaValue::String(match special {
            true => String::from_utf8_lossy(b).into_owned(),
            false => b.iter().map(|&x| byte_to_char(x)).collect(),
        }));
        types.push(MetaValue::I32(if special { 3 } else { 1 }));
        if !special && b.len() > 1 {
            let (left, right) = last_merge(b, id as u32, &ranks);
            let spell = |s: &[u8]| s.iter().map(|&x| byte_to_char(x)).collect::<String>();
            merges.push((id, format!("{} {}", spell(left), spell(right))));
        }
    }
    // Merges in rank order, as BPE applies them.
    merges.sort_by_key(|&(id, _)| id);
    let id_of = |text: &str| harmony.encode_with_specials(text).first().copied();
    let mut meta = Metadata::new();
    let mut put = |k: &str, v: MetaValue| {
        meta.insert(k.to_string(), v);
    };
    put("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
    put("tokenizer.ggml.pre", MetaValue::String("gpt-4o".into()));
    put("tokenizer.ggml.tokens", MetaValue::Array(tokens));
    put("tokenizer.ggml.token_type", MetaValue::Array(types));
    put(
        "tokenizer.ggml.merges",
        MetaValue::Array(
            merges
                .into_iter()
                .map(|(_, m)| MetaValue::String(m))
                .collect(),
        ),
    );
    if let Some(id) = id_of("<|startoftext|>") {
        put("tokenizer.ggml.bos_token_id", MetaValue::U32(id));
    }
    if let Some(id) = id_of("<|return|>") {
        put("tokenizer.ggml.eos_token_id", MetaValue::U32(id));
    }
    put("tokenizer.ggml.add_bos_token", MetaValue::Bool(false));
    gguf::build(&meta)
}

/// The two parts BPE joins last to make `token` (rank `rank`): merge the bytes by lowest
/// rank, as the encoder does, but stop before any merge of rank `rank` or above.
fn last_merge<'a>(
    token: &'a [u8],
    rank: u32,
    ranks: &HashMap<Vec<u8>, u32>,
) -> (&'a [u8], &'a [u8]) {
    // Part boundaries: part i is token[bounds[i]..bounds[i + 1]].
    let mut bounds: Vec<usize> = (0..=token.len()).collect();
    loop {
        let best = (0..bounds.len() - 2)
            .filter_map(|i| {
                let r = *ranks.get(&token[bounds[i]..bounds[i + 2]])?;
                (r < rank).then_some((r, i))
            })
            .min();
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    // A consistent BPE vocabulary leaves exactly two parts; were it not so, splitting after
    // the first part still gives a well-formed (if useless) merge.
    (&token[..bounds[1]], &token[bounds[1]..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our o200k tokenizer against the tiktoken inside `openai-harmony` (OpenAI's own).
    #[test]
    fn encodes_like_tiktoken() {
        let harmony = Harmony::load().unwrap();
        let tok = o200k_harmony(&harmony).unwrap();
        let texts = [
            "Hello, world! What's the capital of France?",
            "  leading spaces\n\n\ttabs and\r\nnewlines   ",
            "Numbers 1234567 and 3.14159, dates 2026-11-23.",
            "fn main() { println!(\"{}\", x[0] + 1); } // código",
            "Ünïcödé: 日本語のテキスト, emoji 🦀🚀, Ελληνικά, русский.",
            "I'm you're they'll DON'T shouldn't",
            "<|return|> is text here",
        ];
        for text in texts {
            let ours = tok.encode(text, false).unwrap();
            let theirs = harmony.encode_with_specials(text);
            if text.contains("<|") {
                assert_ne!(ours, theirs, "plain text keeps markup as text");
                assert_eq!(tok.encode(text, true).unwrap(), theirs, "{text}");
            } else {
                assert_eq!(ours, theirs, "{text}");
            }
            assert_eq!(tok.decode(&ours, false).unwrap(), text);
        }
        assert_eq!(tok.vocab_size(), VOCAB_SIZE as usize);
        let channel = harmony.encode_with_specials("<|channel|>");
        assert_eq!(channel, [200005]);
        assert!(tok.is_eog(200002) && tok.is_eog(200012) && !tok.is_eog(200007));
    }
}
