//! Incremental detokenization.

use std::ops::Deref;

use super::{clean_spaces, Tokenizer, TokenizerError};

/// Turns ids into text one at a time. Each [`push`](StreamDecoder::push) returns the text that
/// became final: complete UTF-8 only (a multi-byte character split over byte tokens is held
/// back until it is whole), and, for tokenizers that clean up spaces, only text that later
/// tokens can no longer change. [`finish`](StreamDecoder::finish) returns the rest. All the
/// pieces concatenated equal [`Tokenizer::decode`] of all the ids.
///
/// `T` is `&Tokenizer` (from [`Tokenizer::stream_decoder`]) or an owning pointer such as
/// `Arc<Tokenizer>`.
pub struct StreamDecoder<T: Deref<Target = Tokenizer>> {
    tok: T,
    skip_special: bool,
    first: bool,
    /// Decoded bytes not yet through the space clean-up (clean-space tokenizers only).
    raw: Vec<u8>,
    /// Bytes that are final but do not yet end on a character boundary.
    utf8: Vec<u8>,
}

/// How many bytes before a cut must hold no apostrophe for llama.cpp's space clean-up to treat
/// the two sides independently (its rules look at most two characters ahead of one).
const CLEAN_MARGIN: usize = 6;

impl<T: Deref<Target = Tokenizer>> StreamDecoder<T> {
    /// A decoder over `tok`; `skip_special` as in [`Tokenizer::decode`].
    pub fn new(tok: T, skip_special: bool) -> Self {
        StreamDecoder {
            tok,
            skip_special,
            first: true,
            raw: Vec::new(),
            utf8: Vec::new(),
        }
    }

    /// Adds one id; returns the newly final text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        let piece = self.tok.piece(id, self.skip_special, self.first)?;
        self.first = false;
        if self.tok.clean_spaces {
            self.raw.extend_from_slice(piece);
            if let Some(cut) = clean_cut(&self.raw) {
                let mut done: Vec<u8> = self.raw.drain(..cut).collect();
                clean_spaces(&mut done);
                self.utf8.extend_from_slice(&done);
            }
        } else {
            self.utf8.extend_from_slice(piece);
        }
        Ok(self.take_complete())
    }

    /// Ends the stream: returns everything still held back (an unfinished UTF-8 sequence
    /// becomes U+FFFD). The decoder can be reused afterwards for a new sequence.
    pub fn finish(&mut self) -> Option<String> {
        if !self.raw.is_empty() {
            let mut rest = std::mem::take(&mut self.raw);
            clean_spaces(&mut rest);
            self.utf8.extend_from_slice(&rest);
        }
        let mut out = self.take_complete().unwrap_or_default();
        if !self.utf8.is_empty() {
            out.push_str(&String::from_utf8_lossy(&self.utf8));
            self.utf8.clear();
        }
        self.first = true;
        (!out.is_empty()).then_some(out)
    }

    /// The tokenizer this decoder uses.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }

    /// Takes the longest prefix of `utf8` that is complete, replacing invalid sequences by
    /// U+FFFD exactly as `String::from_utf8_lossy` would over the whole text.
    fn take_complete(&mut self) -> Option<String> {
        let mut out = String::new();
        let mut pos = 0;
        while pos < self.utf8.len() {
            match std::str::from_utf8(&self.utf8[pos..]) {
                Ok(s) => {
                    out.push_str(s);
                    pos = self.utf8.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.utf8[pos..pos + valid]).expect("valid prefix"),
                    );
                    pos += valid;
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            pos += n;
                        }
                        // An incomplete sequence at the end: wait for more bytes.
                        None => break,
                    }
                }
            }
        }
        self.utf8.drain(..pos);
        (!out.is_empty()).then_some(out)
    }
}

/// The last position where `raw` can be cut so that cleaning both sides separately equals
/// cleaning the whole: the byte before the cut is neither a space nor an apostrophe (the
/// rules only remove spaces, looking one character back), and no apostrophe lies within
/// `CLEAN_MARGIN` bytes before it (apostrophe rules look up to two characters ahead).
fn clean_cut(raw: &[u8]) -> Option<usize> {
    let mut last_apostrophe: Option<usize> = None;
    for (i, &b) in raw.iter().enumerate().rev() {
        if b == b'\'' {
            last_apostrophe = Some(i);
            break;
        }
    }
    let limit = match last_apostrophe {
        // Cut points c need every apostrophe below c - CLEAN_MARGIN.
        Some(a) => a + CLEAN_MARGIN + 1,
        None => 1,
    };
    (limit.max(1)..=raw.len())
        .rev()
        .find(|&c| !matches!(raw[c - 1], b' ' | b'\''))
}
