//! SentencePiece BPE as llama.cpp runs it for `tokenizer.ggml.model = llama`: spaces become
//! `▁`, a `▁` is prefixed, then adjacent pieces are merged while their concatenation is a
//! vocabulary entry, highest score first (leftmost on ties). Pieces that are not vocabulary
//! entries fall back to `<0xNN>` byte tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

pub(crate) struct Spm {
    /// Score of each id (higher merges first).
    pub scores: Vec<f32>,
    /// Prefix each text fragment with a space (`tokenizer.ggml.add_space_prefix`).
    pub add_space_prefix: bool,
    /// `<0xNN>` token for each byte, if the vocabulary has it.
    pub byte_tokens: [Option<u32>; 256],
    pub unk: Option<u32>,
}

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl Spm {
    /// Appends the ids of one text fragment to `out`.
    pub fn encode(&self, fragment: &str, vocab: &HashMap<String, u32>, out: &mut Vec<u32>) {
        let mut text = String::with_capacity(fragment.len() + 3);
        if self.add_space_prefix {
            text.push('\u{2581}');
        }
        for c in fragment.chars() {
            text.push(if c == ' ' { '\u{2581}' } else { c });
        }
        if text.is_empty() {
            return;
        }

        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: Some(i + 1),
            });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }

        let mut queue = BinaryHeap::new();
        let try_add = |symbols: &[Symbol],
                       queue: &mut BinaryHeap<Bigram>,
                       l: Option<usize>,
                       r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let (a, b) = (&symbols[l], &symbols[r]);
            let piece = &text[a.start..b.start + b.len];
            if let Some(&id) = vocab.get(piece) {
                queue.push(Bigram {
                    left: l,
                    right: r,
                    score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                    size: piece.len(),
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&symbols, &mut queue, Some(i - 1), Some(i));
        }

        while let Some(bg) = queue.pop() {
            let (l, r) = (bg.left, bg.right);
            if symbols[l].len == 0
                || symbols[r].len == 0
                || symbols[l].len + symbols[r].len != bg.size
            {
                continue;
            }
            symbols[l].len += symbols[r].len;
            symbols[r].len = 0;
            symbols[l].next = symbols[r].next;
            if let Some(n) = symbols[r].next {
                symbols[n].prev = Some(l);
            }
            let (prev, next) = (symbols[l].prev, symbols[l].next);
            try_add(&symbols, &mut queue, prev, Some(l));
            try_add(&symbols, &mut queue, Some(l), next);
        }

        let mut i = Some(0);
        while let Some(k) = i {
            let s = &symbols[k];
            let piece = &text[s.start..s.start + s.len];
            match vocab.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        let id = self.byte_tokens[b as usize]
                            .or_else(|| {
                                // llama.cpp falls back to a token spelled as the byte itself.
                                std::str::from_utf8(&[b])
                                    .ok()
                                    .and_then(|s| vocab.get(s).copied())
                            })
                            .or(self.unk);
                        out.extend(id);
                    }
                }
            }
            i = s.next;
        }
    }
}
