//! Building a [`Tokenizer`] from GGUF metadata (`tokenizer.ggml.*`).

use std::collections::HashSet;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::{
    attr, byte_level_decode, parse_byte_token, pretok, spm::Spm, Backend, Parts, Tokenizer,
    TokenizerError,
};
use crate::formats::gguf::{MetaValue, Metadata};

const K_MODEL: &str = "tokenizer.ggml.model";
const K_PRE: &str = "tokenizer.ggml.pre";
const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_TYPES: &str = "tokenizer.ggml.token_type";
const K_SCORES: &str = "tokenizer.ggml.scores";
const K_MERGES: &str = "tokenizer.ggml.merges";

enum Model {
    /// Byte-level BPE (`gpt2`).
    Bpe,
    /// SentencePiece BPE (`llama`).
    Spm,
}

fn get<'m>(meta: &'m Metadata, key: &str) -> Option<&'m MetaValue> {
    meta.get(key)
}

/// The bytes each token decodes to: special tokens as their text, byte tokens as their
/// byte, normal tokens through the model's own mapping `normal`.
fn token_pieces(tokens: &[String], attrs: &[u8], normal: impl Fn(&str) -> Vec<u8>) -> Vec<Vec<u8>> {
    tokens
        .iter()
        .zip(attrs)
        .map(|(t, &a)| {
            if a & (attr::CONTROL | attr::UNKNOWN | attr::USER_DEFINED) != 0 {
                t.as_bytes().to_vec()
            } else if a & attr::NORMAL != 0 {
                normal(t)
            } else if a & attr::BYTE != 0 {
                parse_byte_token(t).map(|b| vec![b]).unwrap_or_default()
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// An integer metadata value of any width, when it fits an i64.
fn as_i64(v: &MetaValue) -> Option<i64> {
    v.as_i128().and_then(|i| i64::try_from(i).ok())
}

fn get_str<'m>(meta: &'m Metadata, key: &str) -> Result<Option<&'m str>, TokenizerError> {
    match get(meta, key) {
        None => Ok(None),
        Some(MetaValue::String(s)) => Ok(Some(s)),
        Some(v) => Err(TokenizerError::meta(
            key,
            format!("expected a string, found {}", v.type_name()),
        )),
    }
}

fn get_bool(meta: &Metadata, key: &str) -> Result<Option<bool>, TokenizerError> {
    match get(meta, key) {
        None => Ok(None),
        Some(MetaValue::Bool(b)) => Ok(Some(*b)),
        Some(v) => match as_i64(v) {
            Some(x) => Ok(Some(x != 0)),
            None => Err(TokenizerError::meta(
                key,
                format!("expected a bool, found {}", v.type_name()),
            )),
        },
    }
}

/// A token id key; ids outside the vocabulary are ignored, as llama.cpp does.
fn get_id(meta: &Metadata, key: &str, n_vocab: usize) -> Result<Option<u32>, TokenizerError> {
    match get(meta, key) {
        None => Ok(None),
        Some(v) => match as_i64(v) {
            Some(x) if x >= 0 && (x as u64) < n_vocab as u64 => Ok(Some(x as u32)),
            Some(_) => Ok(None),
            None => Err(TokenizerError::meta(
                key,
                format!("expected an integer token id, found {}", v.type_name()),
            )),
        },
    }
}

fn get_array<'m>(meta: &'m Metadata, key: &str) -> Result<Option<&'m [MetaValue]>, TokenizerError> {
    match get(meta, key) {
        None => Ok(None),
        Some(MetaValue::Array(a)) => Ok(Some(a)),
        Some(v) => Err(TokenizerError::meta(
            key,
            format!("expected an array, found {}", v.type_name()),
        )),
    }
}

fn string_array(meta: &Metadata, key: &str) -> Result<Option<Vec<String>>, TokenizerError> {
    let Some(a) = get_array(meta, key)? else {
        return Ok(None);
    };
    a.iter()
        .enumerate()
        .map(|(i, v)| match v {
            MetaValue::String(s) => Ok(s.clone()),
            v => Err(TokenizerError::meta(
                key,
                format!("entry {i} is not a string ({})", v.type_name()),
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

pub(crate) fn build(meta: &Metadata) -> Result<Tokenizer, TokenizerError> {
    let model_name =
        get_str(meta, K_MODEL)?.ok_or_else(|| TokenizerError::meta(K_MODEL, "missing"))?;
    let model = match model_name {
        "gpt2" => Model::Bpe,
        "llama" => Model::Spm,
        other => {
            return Err(TokenizerError::UnsupportedModel {
                model: other.to_string(),
                key: K_MODEL.to_string(),
            })
        }
    };

    // Pre-tokenizer (byte-level BPE only; a missing name means llama.cpp's "default").
    let pre = match model {
        Model::Bpe => {
            let name = get_str(meta, K_PRE)?.unwrap_or("default");
            Some(
                pretok::lookup(name).ok_or_else(|| TokenizerError::UnsupportedPre {
                    pre: name.to_string(),
                    key: K_PRE.to_string(),
                })?,
            )
        }
        Model::Spm => None,
    };

    let mut tokens =
        string_array(meta, K_TOKENS)?.ok_or_else(|| TokenizerError::meta(K_TOKENS, "missing"))?;
    if tokens.is_empty() {
        return Err(TokenizerError::meta(K_TOKENS, "empty vocabulary"));
    }
    let n = tokens.len();
    {
        let mut seen = std::collections::HashMap::with_capacity(n);
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
            if let Some(prev) = seen.insert(t.clone(), i) {
                return Err(TokenizerError::meta(
                    K_TOKENS,
                    format!("duplicate token '{t}' at ids {prev} and {i}"),
                ));
            }
        }
    }

    let mut attrs = vec![attr::NORMAL; n];
    if let Some(types) = get_array(meta, K_TYPES)? {
        if types.len() < n {
            return Err(TokenizerError::meta(
                K_TYPES,
                format!("{} entries for {n} tokens", types.len()),
            ));
        }
        for (i, v) in types.iter().take(n).enumerate() {
            let t = as_i64(v).ok_or_else(|| {
                TokenizerError::meta(
                    K_TYPES,
                    format!("entry {i} is not an integer ({})", v.type_name()),
                )
            })?;
            attrs[i] = match t {
                1 => attr::NORMAL,
                2 => attr::UNKNOWN,
                3 => attr::CONTROL,
                4 => attr::USER_DEFINED,
                5 => attr::UNUSED,
                6 => attr::BYTE,
                _ => 0,
            };
        }
    }

    let n_vocab = n;
    let mut bos = get_id(meta, "tokenizer.ggml.bos_token_id", n_vocab)?;
    let mut eos = get_id(meta, "tokenizer.ggml.eos_token_id", n_vocab)?;
    let mut unk = get_id(meta, "tokenizer.ggml.unknown_token_id", n_vocab)?;
    let eot = get_id(meta, "tokenizer.ggml.eot_token_id", n_vocab)?;
    let eom = get_id(meta, "tokenizer.ggml.eom_token_id", n_vocab)?;
    let add_space_prefix = get_bool(meta, "tokenizer.ggml.add_space_prefix")?;
    let add_eos = get_bool(meta, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let chat_template = get_str(meta, "tokenizer.chat_template")?.map(str::to_string);

    // Attribute hacks llama.cpp applies by model name (Phi-3 strips whitespace after its
    // special tokens).
    let model_label = get_str(meta, "general.name")
        .ok()
        .flatten()
        .unwrap_or("")
        .to_lowercase();
    if model_label.contains("phi-3") || model_label.contains("phi3") {
        for (i, a) in attrs.iter_mut().enumerate() {
            let t = tokens[i].as_str();
            if *a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0 || t == "</s>" {
                *a |= attr::RSTRIP;
            }
            if matches!(t, "<unk>" | "<s>" | "<|endoftext|>") {
                *a &= !attr::RSTRIP;
            }
        }
    }

    let (backend, pieces, add_bos, strip_first_space, clean_spaces) = match model {
        Model::Bpe => {
            let pre = pre.expect("BPE has a pre-tokenizer");
            let tok = build_bpe(meta, &tokens, &attrs, &pre)?;
            let pieces = token_pieces(&tokens, &attrs, byte_level_decode);
            let add_bos = get_bool(meta, "tokenizer.ggml.add_bos_token")?.unwrap_or(pre.add_bos);
            (
                Backend::Bpe(Box::new(tok)),
                pieces,
                add_bos,
                add_space_prefix.unwrap_or(false),
                pre.clean_spaces,
            )
        }
        Model::Spm => {
            // llama.cpp's defaults for SentencePiece vocabularies.
            if get(meta, "tokenizer.ggml.bos_token_id").is_none() && n_vocab > 1 {
                bos = Some(1);
            }
            if get(meta, "tokenizer.ggml.eos_token_id").is_none() && n_vocab > 2 {
                eos = Some(2);
            }
            if get(meta, "tokenizer.ggml.unknown_token_id").is_none() {
                unk = Some(0);
            }
            let scores = match get_array(meta, K_SCORES)? {
                None => vec![0.0; n],
                Some(a) => {
                    if a.len() < n {
                        return Err(TokenizerError::meta(
                            K_SCORES,
                            format!("{} entries for {n} tokens", a.len()),
                        ));
                    }
                    a.iter()
                        .take(n)
                        .enumerate()
                        .map(|(i, v)| match *v {
                            MetaValue::F32(x) => Ok(x),
                            MetaValue::F64(x) => Ok(x as f32),
                            ref v => as_i64(v).map(|x| x as f32).ok_or_else(|| {
                                TokenizerError::meta(
                                    K_SCORES,
                                    format!("entry {i} is not a number ({})", v.type_name()),
                                )
                            }),
                        })
                        .collect::<Result<Vec<f32>, _>>()?
                }
            };
            let mut byte_tokens = [None; 256];
            for (i, t) in tokens.iter().enumerate() {
                if let Some(b) = parse_byte_token(t) {
                    if t == &format!("<0x{b:02X}>") {
                        byte_tokens[b as usize] = Some(i as u32);
                    }
                }
            }
            let add_space_prefix = add_space_prefix.unwrap_or(true);
            let pieces = token_pieces(&tokens, &attrs, |t| t.replace('\u{2581}', " ").into_bytes());
            let add_bos = get_bool(meta, "tokenizer.ggml.add_bos_token")?.unwrap_or(true);
            let spm = Spm {
                scores,
                add_space_prefix,
                byte_tokens,
                unk,
            };
            (
                Backend::Spm(Box::new(spm)),
                pieces,
                add_bos,
                add_space_prefix,
                false,
            )
        }
    };

    Ok(Parts {
        backend,
        tokens,
        attrs,
        pieces,
        bos,
        eos,
        extra_eog: eot.into_iter().chain(eom).collect(),
        add_bos,
        add_eos,
        strip_first_space,
        clean_spaces,
        chat_template,
        partition_specials: true,
    }
    .finish())
}

/// The `tokenizers` pipeline for one text fragment of a byte-level BPE vocabulary.
fn build_bpe(
    meta: &Metadata,
    tokens: &[String],
    attrs: &[u8],
    pre: &pretok::PreConfig,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let merges_raw =
        string_array(meta, K_MERGES)?.ok_or_else(|| TokenizerError::meta(K_MERGES, "missing"))?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let known: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let mut merges = Vec::with_capacity(merges_raw.len());
    for (i, m) in merges_raw.iter().enumerate() {
        // llama.cpp splits at the first space after the first byte.
        let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            return Err(TokenizerError::meta(
                K_MERGES,
                format!("entry {i} ('{m}') is not two tokens separated by a space"),
            ));
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        // The `tokenizers` BPE model needs both halves and their concatenation in the
        // vocabulary; merges that make something else can never produce a token anyway.
        if known.contains(a) && known.contains(b) && known.contains(format!("{a}{b}").as_str()) {
            merges.push((a.to_string(), b.to_string()));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| TokenizerError::meta(K_MERGES, super::one_line(&e.to_string())))?;

    let mut steps = Vec::with_capacity(pre.regexes.len() + 1);
    for re in &pre.regexes {
        let split = Split::new(
            SplitPattern::Regex(re.clone()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| {
            TokenizerError::meta(
                K_PRE,
                format!("bad pattern {re:?}: {}", super::one_line(&e.to_string())),
            )
        })?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    )));

    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(Sequence::new(steps)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    // Special tokens are matched by our own partition before text reaches this pipeline;
    // they are registered for completeness and never matched inside a text fragment.
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(attrs)
        .filter(|(_, &a)| a & (attr::CONTROL | attr::UNKNOWN | attr::USER_DEFINED) != 0)
        .map(|(t, &a)| {
            let mut at = AddedToken::from(t.clone(), a & attr::USER_DEFINED == 0);
            at.normalized = false;
            at
        })
        .collect();
    let (special, user): (Vec<AddedToken>, Vec<AddedToken>) =
        added.into_iter().partition(|t| t.special);
    let hf_err =
        |e: tokenizers::Error| TokenizerError::meta(K_TOKENS, super::one_line(&e.to_string()));
    tok.add_special_tokens(special).map_err(hf_err)?;
    tok.add_tokens(user).map_err(hf_err)?;
    tok.set_encode_special_tokens(true);
    Ok(tok)
}
