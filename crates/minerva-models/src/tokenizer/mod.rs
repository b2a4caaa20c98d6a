//! Tokenizers: byte-level BPE (GPT-2 style) and SentencePiece BPE, built either from GGUF
//! metadata (`tokenizer.ggml.*`) or from a Hugging Face `tokenizer.json`.
//!
//! Behaviour follows llama.cpp where the two differ from Hugging Face, so that a GGUF model
//! tokenizes and detokenizes exactly as llama.cpp does:
//!
//! * special tokens are matched in the text before the pre-tokenizer runs, longest token
//!   first; control tokens only when `parse_special` is set, user-defined tokens always;
//! * decoding renders control tokens as nothing unless asked to render them, user-defined
//!   tokens as their raw text, and applies llama.cpp's `clean_spaces` rules for the
//!   pre-tokenizers that enable them.
//!
//! [`StreamDecoder`] turns ids into text one at a time; the pieces it returns always concatenate
//! to [`Tokenizer::decode`] of the same ids.

mod gguf;
mod hf;
mod pretok;
mod spm;
mod stream;
mod tiktoken;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use stream::StreamDecoder;

/// Errors building or running a tokenizer. Messages are one line and name the metadata key or
/// file they come from.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A GGUF metadata key is missing, has the wrong type, or holds a bad value.
    #[error("{key}: {message}")]
    Metadata { key: String, message: String },
    #[error("unsupported tokenizer model '{model}' ({key})")]
    UnsupportedModel { model: String, key: String },
    #[error("unsupported pre-tokenizer '{pre}' ({key})")]
    UnsupportedPre { pre: String, key: String },
    /// A tokenizer file (tokenizer.json, tokenizer_config.json, ...) cannot be read or parsed.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("token id {id} is out of range (vocabulary has {vocab_size} tokens)")]
    InvalidId { id: u32, vocab_size: usize },
    /// An error reported by the `tokenizers` crate while encoding.
    #[error("tokenizer: {0}")]
    Encode(String),
}

impl TokenizerError {
    pub(crate) fn meta(key: &str, message: impl Into<String>) -> Self {
        TokenizerError::Metadata {
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn file(path: &Path, message: impl std::fmt::Display) -> Self {
        TokenizerError::File {
            path: path.to_path_buf(),
            message: one_line(&message.to_string()),
        }
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Token attribute bits, as llama.cpp keeps them (a token can carry several).
pub(crate) mod attr {
    pub const NORMAL: u8 = 1 << 0;
    pub const UNKNOWN: u8 = 1 << 1;
    pub const CONTROL: u8 = 1 << 2;
    pub const USER_DEFINED: u8 = 1 << 3;
    pub const UNUSED: u8 = 1 << 4;
    pub const BYTE: u8 = 1 << 5;
    /// Strip ASCII whitespace to the left of this special token when it is matched.
    pub const LSTRIP: u8 = 1 << 6;
    /// Strip ASCII whitespace to the right of this special token when it is matched.
    pub const RSTRIP: u8 = 1 << 7;
}

/// How raw text (between special tokens) becomes ids.
pub(crate) enum Backend {
    /// GGUF byte-level BPE: llama.cpp's special-token partition, then the `tokenizers` pipeline
    /// (regex pre-tokenizer, byte-level mapping, BPE) on each text fragment. The special tokens
    /// are registered in `tok` too, but it is set never to match them inside text.
    Bpe(Box<tokenizers::Tokenizer>),
    /// GGUF SentencePiece BPE (`tokenizer.ggml.model = llama`), llama.cpp's algorithm.
    Spm(Box<spm::Spm>),
    /// `tokenizer.json`: the `tokenizers` crate handles added tokens itself. `plain` is a copy
    /// that leaves special tokens as text (for `parse_special = false`).
    Hf {
        tok: Box<tokenizers::Tokenizer>,
        plain: Box<tokenizers::Tokenizer>,
    },
}

/// A text tokenizer with the special-token knowledge an inference engine needs.
pub struct Tokenizer {
    backend: Backend,
    /// Token text by id, as stored in the vocabulary (e.g. `Ġhello` for byte-level BPE).
    tokens: Vec<String>,
    token_ids: HashMap<String, u32>,
    /// `attr::*` bits by id.
    attrs: Vec<u8>,
    /// The bytes each token decodes to (control tokens: their text, shown only on request).
    pieces: Vec<Vec<u8>>,
    /// Special tokens matched in text before tokenization, longest first (GGUF backends).
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    /// Decoding drops one leading space of the first token (SentencePiece's prefix space).
    strip_first_space: bool,
    /// llama.cpp's `clean_spaces` post-processing of decoded text.
    clean_spaces: bool,
    chat_template: Option<String>,
}

/// End-of-generation token texts (llama.cpp's list).
pub(crate) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
];

impl Tokenizer {
    /// Builds the tokenizer described by GGUF metadata (`tokenizer.ggml.*` keys).
    pub fn from_gguf_metadata(
        meta: &crate::formats::gguf::Metadata,
    ) -> Result<Tokenizer, TokenizerError> {
        gguf::build(meta)
    }

    /// Loads a Hugging Face `tokenizer.json` (or the directory holding it). BOS/EOS ids, the
    /// add-BOS flag, end-of-generation ids and the chat template are taken from
    /// `tokenizer_config.json`, `generation_config.json` and `config.json` beside it when present.
    pub fn from_file(path: &Path) -> Result<Tokenizer, TokenizerError> {
        hf::build(path)
    }

    /// gpt-oss's o200k_harmony tokenizer, from the harmony encoding (for checkpoints without
    /// a `tokenizer.json`).
    pub fn o200k_harmony(harmony: &crate::harmony::Harmony) -> Result<Tokenizer, TokenizerError> {
        tiktoken::o200k_harmony(harmony)
    }

    /// Token ids for `text`. Special tokens written in the text (e.g. `<|im_start|>`) become
    /// their ids only when `parse_special` is set; otherwise they are tokenized as plain text
    /// (user-defined added tokens are always matched, as llama.cpp does). Never adds BOS/EOS.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        match &self.backend {
            Backend::Hf { tok, plain } => {
                let t = if parse_special { tok } else { plain };
                let enc = t
                    .encode_fast(text, false)
                    .map_err(|e| TokenizerError::Encode(one_line(&e.to_string())))?;
                out.extend_from_slice(enc.get_ids());
            }
            Backend::Bpe(tok) => {
                for frag in self.partition(text, parse_special) {
                    match frag {
                        Fragment::Text(s) => {
                            let enc = tok
                                .encode_fast(s, false)
                                .map_err(|e| TokenizerError::Encode(one_line(&e.to_string())))?;
                            out.extend_from_slice(enc.get_ids());
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Backend::Spm(spm) => {
                // Every text fragment follows the start or a special token, so each one gets
                // the SentencePiece prefix space (llama.cpp's `is_prev_special` rule).
                for frag in self.partition(text, parse_special) {
                    match frag {
                        Fragment::Text(s) => spm.encode(s, &self.token_ids, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Text for `ids`. With `skip_special`, control tokens (BOS, `<|im_end|>`, ...) render as
    /// nothing; otherwise as their text. Invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            bytes.extend_from_slice(self.piece(id, skip_special, i == 0)?);
        }
        if self.clean_spaces {
            clean_spaces(&mut bytes);
        }
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// An incremental decoder that skips control tokens (as `decode(ids, true)`).
    pub fn stream_decoder(&self) -> StreamDecoder<&Tokenizer> {
        StreamDecoder::new(self, true)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model expects BOS at the start of a prompt (the caller adds it).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether the model expects EOS at the end of an encoded text (the caller adds it).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether generating `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a vocabulary entry, spelled as stored (`Ġhello`, `▁hello`, `<|im_end|>`).
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.token_ids.get(s).copied()
    }

    /// The vocabulary entry of `id`, spelled as stored.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokens.get(id as usize).cloned()
    }

    /// The bytes `id` decodes to on its own, special tokens spelled out (OpenAI logprobs
    /// report these; a piece of a multi-byte character is not valid UTF-8 by itself).
    pub fn token_bytes(&self, id: u32) -> Result<&[u8], TokenizerError> {
        self.piece(id, false, false)
    }

    /// Whether `id` is a control token (rendered only when special tokens are shown).
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & (attr::CONTROL | attr::UNKNOWN) != 0)
    }

    /// The chat template shipped with the model (GGUF `tokenizer.chat_template` or
    /// `tokenizer_config.json`'s `chat_template`).
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The bytes `id` decodes to. `first`: the first token of a sequence (SentencePiece
    /// models drop its leading space).
    fn piece(&self, id: u32, skip_special: bool, first: bool) -> Result<&[u8], TokenizerError> {
        let i = id as usize;
        let (Some(&a), Some(p)) = (self.attrs.get(i), self.pieces.get(i)) else {
            return Err(TokenizerError::InvalidId {
                id,
                vocab_size: self.tokens.len(),
            });
        };
        if skip_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            return Ok(&[]);
        }
        let mut p = p.as_slice();
        if first && self.strip_first_space && p.first() == Some(&b' ') {
            p = &p[1..];
        }
        Ok(p)
    }

    /// llama.cpp's special-token partition: for each special token (longest first), split
    /// every remaining text fragment at its occurrences.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(text));
        for &id in &self.specials {
            let a = self.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(s) if s.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut s) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(pos) = s.find(needle) {
                    let mut left = &s[..pos];
                    if a & attr::LSTRIP != 0 {
                        left = left.trim_end_matches(is_c_space);
                    }
                    if !left.is_empty() {
                        next.push(Fragment::Text(left));
                    }
                    next.push(Fragment::Token(id));
                    s = &s[pos + needle.len()..];
                    if a & attr::RSTRIP != 0 {
                        s = s.trim_start_matches(is_c_space);
                    }
                }
                if !s.is_empty() {
                    next.push(Fragment::Text(s));
                }
            }
            frags = next;
        }
        frags
    }
}

/// C's `isspace` on ASCII.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// llama.cpp's `clean_spaces` detokenizer post-processing, in place: drop the space before
/// `? ! . ,`, turn ` ' ` into `'`, and drop the space before `'s 'm 're 've`.
pub(crate) fn clean_spaces(text: &mut Vec<u8>) {
    // Each pass reads the input at i-1, i and (passes 2 and 3) a little ahead, and writes
    // behind the read position, so it can run in place.
    let n = text.len();
    if n == 0 {
        return;
    }
    let mut total = 1;
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }

    let n = total;
    total = 1;
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }

    let n = total;
    total = 1;
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            if matches!(x1, b's' | b'm')
                || (i + 2 < n && matches!((x1, text[i + 2]), (b'r', b'e') | (b'v', b'e')))
            {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

/// GPT-2's byte-to-character map for byte-level BPE vocabularies.
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_CHARS.get_or_init(build_byte_chars).0[b as usize]
}

/// Inverse of [`byte_to_char`].
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let t = BYTE_CHARS.get_or_init(build_byte_chars);
    t.1.get(c as usize).copied().flatten()
}

type ByteChars = ([char; 256], Vec<Option<u8>>);
static BYTE_CHARS: std::sync::OnceLock<ByteChars> = std::sync::OnceLock::new();

fn build_byte_chars() -> ByteChars {
    let mut fwd = ['\0'; 256];
    let mut rev = vec![None; 512];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let visible = matches!(b, 33..=126 | 161..=172 | 174..=255);
        let c = if visible {
            b as char
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid char")
        };
        fwd[b as usize] = c;
        rev[c as usize] = Some(b);
    }
    (fwd, rev)
}

/// Bytes of a byte-level BPE token (characters outside the map are kept as their UTF-8).
pub(crate) fn byte_level_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// The byte of a `<0xNN>` token.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Shared last steps of building a tokenizer: end-of-generation ids (llama.cpp's rules),
/// the special-token partition order.
pub(crate) struct Parts {
    pub backend: Backend,
    pub tokens: Vec<String>,
    pub attrs: Vec<u8>,
    pub pieces: Vec<Vec<u8>>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Further ids that end generation (eot, eom, generation_config eos lists).
    pub extra_eog: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub strip_first_space: bool,
    pub clean_spaces: bool,
    pub chat_template: Option<String>,
    /// Build the llama.cpp special-token partition list (GGUF backends).
    pub partition_specials: bool,
}

impl Parts {
    fn finish(mut self) -> Tokenizer {
        let mut token_ids = HashMap::with_capacity(self.tokens.len());
        for (i, t) in self.tokens.iter().enumerate() {
            if !t.is_empty() {
                token_ids.entry(t.clone()).or_insert(i as u32);
            }
        }

        // End of generation: tokens with an end-of-turn text (made control tokens), then the
        // model's eos/eot/eom.
        let mut eog: Vec<u32> = Vec::new();
        for text in EOG_TEXTS {
            if let Some(&id) = token_ids.get(*text) {
                eog.push(id);
                self.attrs[id as usize] |= attr::CONTROL;
            }
        }
        // gpt-oss: these markup tokens are always rendered.
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = token_ids.get(text) {
                self.attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend(self.eos);
        eog.extend(self.extra_eog.iter().copied());
        let has = |eog: &[u32], t: &str| token_ids.get(t).is_some_and(|id| eog.contains(id));
        // o200k_harmony / solar-open: `<|end|>` ends a message, not the generation.
        if ((has(&eog, "<|return|>") && has(&eog, "<|call|>"))
            || (has(&eog, "<|calls|>") && has(&eog, "<|flush|>")))
            && has(&eog, "<|end|>")
        {
            let end = token_ids["<|end|>"];
            eog.retain(|&i| i != end);
            self.attrs[end as usize] = attr::USER_DEFINED;
        }
        // gemma4: `</s>` is not an end of generation when `<|tool_response>` is.
        if has(&eog, "<|tool_response>") && has(&eog, "</s>") {
            let s = token_ids["</s>"];
            eog.retain(|&i| i != s);
            self.attrs[s as usize] = attr::NORMAL;
        }
        eog.retain(|&i| (i as usize) < self.tokens.len());
        eog.sort_unstable();
        eog.dedup();

        let mut specials = Vec::new();
        if self.partition_specials {
            specials = (0..self.tokens.len() as u32)
                .filter(|&i| {
                    self.attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN)
                        != 0
                        && !self.tokens[i as usize].is_empty()
                })
                .collect();
            specials.sort_by_key(|&i| std::cmp::Reverse(self.tokens[i as usize].len()));
        }

        Tokenizer {
            backend: self.backend,
            tokens: self.tokens,
            token_ids,
            attrs: self.attrs,
            pieces: self.pieces,
            specials,
            bos: self.bos,
            eos: self.eos,
            eog,
            add_bos: self.add_bos,
            add_eos: self.add_eos,
            strip_first_space: self.strip_first_space,
            clean_spaces: self.clean_spaces,
            chat_template: self.chat_template,
        }
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.backend {
            Backend::Bpe(_) => "gguf-bpe",
            Backend::Spm(_) => "gguf-spm",
            Backend::Hf { .. } => "tokenizer.json",
        };
        f.debug_struct("Tokenizer")
            .field("kind", &kind)
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        clean_spaces(&mut b);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn clean_spaces_rules() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("it ' s"), "it's");
        assert_eq!(clean("he 's here"), "he's here");
        assert_eq!(clean("we 're and we 've"), "we're and we've");
        assert_eq!(clean("don 't"), "don 't");
        assert_eq!(clean(" ."), ".");
        assert_eq!(clean("a ' b ' c"), "a'b'c");
        assert_eq!(clean(""), "");
    }

    #[test]
    fn byte_map_roundtrip() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_level_decode("Ġhello"), b" hello");
    }
}
