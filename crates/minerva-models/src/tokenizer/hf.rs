//! Building a [`Tokenizer`] from a Hugging Face `tokenizer.json` and the config files beside it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{attr, byte_level_decode, parse_byte_token, Backend, Parts, Tokenizer, TokenizerError};

/// How the model's decoder turns vocabulary entries into text.
enum DecodeStyle {
    /// Byte-level BPE (`ByteLevel` decoder).
    ByteLevel,
    /// SentencePiece-style: `▁` is a space, `<0xNN>` is a byte; `strip_first` drops the
    /// leading space of the first token.
    Metaspace { strip_first: bool },
    /// Anything else: the vocabulary entry is the text.
    Plain,
}

fn read_json(path: &Path) -> Result<Option<Value>, TokenizerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| TokenizerError::file(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TokenizerError::file(path, e)),
    }
}

fn decode_style(decoder: &Value) -> DecodeStyle {
    let ty = decoder.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "ByteLevel" => DecodeStyle::ByteLevel,
        "Metaspace" => {
            let scheme = decoder.get("prepend_scheme").and_then(Value::as_str);
            let legacy = decoder.get("add_prefix_space").and_then(Value::as_bool);
            let strip_first = match scheme {
                Some(s) => s != "never",
                None => legacy.unwrap_or(true),
            };
            DecodeStyle::Metaspace { strip_first }
        }
        "Sequence" => {
            let parts: Vec<&Value> = decoder
                .get("decoders")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if parts
                .iter()
                .any(|d| matches!(decode_style(d), DecodeStyle::ByteLevel))
            {
                return DecodeStyle::ByteLevel;
            }
            if let Some(m) = parts
                .iter()
                .find(|d| d.get("type").and_then(Value::as_str) == Some("Metaspace"))
            {
                return decode_style(m);
            }
            let replaces_metaspace = parts.iter().any(|d| {
                d.get("type").and_then(Value::as_str) == Some("Replace")
                    && d.pointer("/pattern/String").and_then(Value::as_str) == Some("\u{2581}")
            });
            if replaces_metaspace {
                let strip_first = parts.iter().any(|d| {
                    d.get("type").and_then(Value::as_str) == Some("Strip")
                        && d.get("start").and_then(Value::as_u64).unwrap_or(0) > 0
                });
                DecodeStyle::Metaspace { strip_first }
            } else {
                DecodeStyle::Plain
            }
        }
        _ => DecodeStyle::Plain,
    }
}

/// A token given as `"<s>"` or `{"content": "<s>", ...}` in tokenizer_config.json.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// `eos_token_id` style values: an id or a list of ids.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a post-processor puts `bos` (a token text) first in single sequences.
fn post_processor_adds(pp: Option<&Value>, bos: &str) -> bool {
    let Some(pp) = pp else { return false };
    match pp.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => {
            pp.get("single")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|first| first.pointer("/SpecialToken/id"))
                .and_then(Value::as_str)
                == Some(bos)
        }
        Some("Sequence") => pp
            .get("processors")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|p| post_processor_adds(Some(p), bos))),
        Some("BertProcessing") | Some("RobertaProcessing") => {
            pp.pointer("/cls/0").and_then(Value::as_str) == Some(bos)
        }
        _ => false,
    }
}

pub(crate) fn build(path: &Path) -> Result<Tokenizer, TokenizerError> {
    let file: PathBuf = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let json = read_json(&file)?.ok_or_else(|| TokenizerError::file(&file, "not found"))?;
    let tok =
        tokenizers::Tokenizer::from_file(&file).map_err(|e| TokenizerError::file(&file, e))?;
    let mut plain = tok.clone();
    plain.set_encode_special_tokens(true);

    let tcfg_path = dir.join("tokenizer_config.json");
    let tcfg = read_json(&tcfg_path)?.unwrap_or(Value::Null);
    let gcfg = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
    let mcfg = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);

    // Vocabulary tables (ids may have gaps; those decode to nothing).
    let vocab = tok.get_vocab(true);
    let n = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
    let mut tokens = vec![String::new(); n];
    for (t, &i) in &vocab {
        tokens[i as usize] = t.clone();
    }
    let mut attrs = vec![0u8; n];
    for &i in vocab.values() {
        attrs[i as usize] = attr::NORMAL;
    }
    for (i, added) in tok.get_added_tokens_decoder() {
        if let Some(a) = attrs.get_mut(i as usize) {
            *a = if added.special {
                attr::CONTROL
            } else {
                attr::USER_DEFINED
            };
        }
    }

    let style = json
        .get("decoder")
        .map(decode_style)
        .unwrap_or(DecodeStyle::Plain);
    let byte_fallback = json
        .pointer("/model/byte_fallback")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let strip_first_space = matches!(style, DecodeStyle::Metaspace { strip_first: true });
    let pieces: Vec<Vec<u8>> = tokens
        .iter()
        .zip(attrs.iter_mut())
        .map(|(t, a)| {
            if *a & (attr::CONTROL | attr::USER_DEFINED) != 0 {
                return t.as_bytes().to_vec();
            }
            if *a == 0 {
                return Vec::new();
            }
            match style {
                DecodeStyle::ByteLevel => byte_level_decode(t),
                DecodeStyle::Metaspace { .. } => match parse_byte_token(t) {
                    Some(b) if byte_fallback => {
                        *a = attr::BYTE;
                        vec![b]
                    }
                    _ => t.replace('\u{2581}', " ").into_bytes(),
                },
                DecodeStyle::Plain => t.as_bytes().to_vec(),
            }
        })
        .collect();

    let lookup = |s: &str| vocab.get(s).copied();
    let bos_text = token_text(tcfg.get("bos_token"));
    let bos = bos_text
        .as_deref()
        .and_then(lookup)
        .or_else(|| ids(gcfg.get("bos_token_id")).first().copied())
        .or_else(|| ids(mcfg.get("bos_token_id")).first().copied());
    let eos_text = token_text(tcfg.get("eos_token"));
    let eos = eos_text
        .as_deref()
        .and_then(lookup)
        .or_else(|| ids(gcfg.get("eos_token_id")).first().copied())
        .or_else(|| ids(mcfg.get("eos_token_id")).first().copied());
    let mut extra_eog = ids(gcfg.get("eos_token_id"));
    extra_eog.extend(ids(mcfg.get("eos_token_id")));

    let add_bos = match tcfg.get("add_bos_token").and_then(Value::as_bool) {
        Some(b) => b,
        None => bos
            .and_then(|b| tokens.get(b as usize))
            .is_some_and(|t| post_processor_adds(json.get("post_processor"), t)),
    };
    let add_eos = tcfg
        .get("add_eos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let clean_spaces = tcfg
        .get("clean_up_tokenization_spaces")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let jinja = dir.join("chat_template.jinja");
    let chat_template = match std::fs::read_to_string(&jinja) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match tcfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default", else the first.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        },
        Err(e) => return Err(TokenizerError::file(&jinja, e)),
    };

    Ok(Parts {
        backend: Backend::Hf {
            tok: Box::new(tok),
            plain: Box::new(plain),
        },
        tokens,
        attrs,
        pieces,
        bos,
        eos,
        extra_eog,
        add_bos,
        add_eos,
        strip_first_space,
        clean_spaces,
        chat_template,
        partition_specials: false,
    }
    .finish())
}
