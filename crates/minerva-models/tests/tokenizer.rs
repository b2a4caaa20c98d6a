//! Tokenizer tests: llama.cpp reference cases on the default model (SmolLM2-135M-Instruct
//! GGUF), streaming detokenization, SentencePiece on a synthetic vocabulary, error paths.

use std::path::PathBuf;
use std::sync::Arc;

use minerva_models::formats::gguf::{GgufFile, MetaValue, Metadata};
use minerva_models::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};

const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/smollm2/tokenizer_cases.json"
);

/// Metadata of the default model; panics (does not skip) when the file is missing.
fn default_metadata() -> Metadata {
    let path = minerva_models::model_cache::default_model_path();
    assert!(
        path.exists(),
        "default model not found at {}: run scripts/fetch-default-model first",
        path.display()
    );
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    file.metadata().clone()
}

fn default_tokenizer() -> Tokenizer {
    Tokenizer::from_gguf_metadata(&default_metadata()).unwrap_or_else(|e| panic!("{e}"))
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    special: bool,
    ids: Vec<u32>,
    decoded: String,
    decoded_special: String,
}

#[derive(serde::Deserialize)]
struct Cases {
    source: String,
    cases: Vec<Case>,
}

fn load_cases() -> Cases {
    let s = std::fs::read_to_string(CASES).unwrap_or_else(|e| panic!("{CASES}: {e}"));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{CASES}: {e}"))
}

#[test]
fn smollm2_matches_llama_cpp() {
    let tok = default_tokenizer();
    let cases = load_cases();
    assert!(cases.cases.len() >= 200, "expected at least 200 cases");

    let (mut enc_ok, mut dec_ok, mut dec_sp_ok, mut stream_ok) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (i, c) in cases.cases.iter().enumerate() {
        let ids = tok.encode(&c.text, c.special).unwrap();
        if ids == c.ids {
            enc_ok += 1;
        } else {
            failures.push(format!(
                "case {i} encode {:?} (special={}): got {:?}, want {:?}",
                c.text, c.special, ids, c.ids
            ));
        }
        let d = tok.decode(&c.ids, true).unwrap();
        if d == c.decoded {
            dec_ok += 1;
        } else {
            failures.push(format!(
                "case {i} decode {:?}: got {d:?}, want {:?}",
                c.ids, c.decoded
            ));
        }
        let ds = tok.decode(&c.ids, false).unwrap();
        if ds == c.decoded_special {
            dec_sp_ok += 1;
        } else {
            failures.push(format!(
                "case {i} decode(special) {:?}: got {ds:?}, want {:?}",
                c.ids, c.decoded_special
            ));
        }
        // Streaming one id at a time gives the same text.
        let mut sd = tok.stream_decoder();
        let mut s = String::new();
        for &id in &c.ids {
            s.extend(sd.push(id).unwrap());
        }
        s.extend(sd.finish());
        if s == c.decoded {
            stream_ok += 1;
        } else {
            failures.push(format!(
                "case {i} stream {:?}: got {s:?}, want {:?}",
                c.ids, c.decoded
            ));
        }
    }
    let n = cases.cases.len();
    eprintln!(
        "{} ({n} cases): encode {enc_ok}/{n}, decode {dec_ok}/{n}, decode(special) {dec_sp_ok}/{n}, stream {stream_ok}/{n}",
        cases.source
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<StreamDecoder<Arc<Tokenizer>>>();
}

#[test]
fn smollm2_special_tokens() {
    let tok = default_tokenizer();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(!tok.add_bos());
    // llama.cpp's EOG set for this model (tests/fixtures/smollm2/greedy.json "eog_ids").
    assert_eq!(tok.eog_ids(), &[0, 2]);
    assert!(tok.is_eog(2) && tok.is_eog(0) && !tok.is_eog(1));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.id_to_token(1).as_deref(), Some("<|im_start|>"));
    assert_eq!(
        tok.token_to_id("Ġhello"),
        tok.encode(" hello", false).unwrap().first().copied()
    );
    assert!(tok.id_to_token(49152).is_none());
    assert!(matches!(
        tok.decode(&[49152], false),
        Err(TokenizerError::InvalidId { id: 49152, .. })
    ));
    assert!(tok
        .chat_template()
        .is_some_and(|t| t.contains("<|im_start|>")));

    // The prompt llama.cpp fed the model in greedy.json: template text with special parsing.
    let greedy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/smollm2/greedy.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let case = &greedy["cases"][0];
    let ids = tok
        .encode(case["rendered"].as_str().unwrap(), true)
        .unwrap();
    let want: Vec<u32> = case["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids, want);
}

/// Pushes ids one at a time; returns the pieces and checks their concatenation.
fn stream_pieces<T: std::ops::Deref<Target = Tokenizer>>(
    sd: &mut StreamDecoder<T>,
    ids: &[u32],
) -> Vec<String> {
    let mut pieces = Vec::new();
    for &id in ids {
        if let Some(p) = sd.push(id).unwrap() {
            pieces.push(p);
        }
    }
    pieces.extend(sd.finish());
    pieces
}

#[test]
fn stream_decoder_holds_back_partial_utf8() {
    let tok = default_tokenizer();
    for text in [
        "😀",
        "I ❤️ NY 🚀🚀🚀 done",
        "你好，世界！中文测试",
        "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 🇫🇷",
        "naïve café — résumé… 𝐀𝐁𝐂",
        "日本語のテキスト and 한국어 텍스트",
        "emoji at end 🤔",
    ] {
        let ids = tok.encode(text, false).unwrap();
        let whole = tok.decode(&ids, true).unwrap();
        assert_eq!(whole, text);
        let mut sd = tok.stream_decoder();
        let pieces = stream_pieces(&mut sd, &ids);
        assert_eq!(pieces.concat(), whole, "{text:?}");
        for p in &pieces {
            assert!(
                !p.contains('\u{FFFD}'),
                "{text:?}: piece {p:?} split a character"
            );
        }
    }

    // An emoji split over byte tokens: nothing comes out until its last byte.
    let ids = tok.encode("😀", false).unwrap();
    assert!(
        ids.len() > 1,
        "expected 😀 to be several byte tokens, got {ids:?}"
    );
    let mut sd = tok.stream_decoder();
    for &id in &ids[..ids.len() - 1] {
        assert_eq!(sd.push(id).unwrap(), None);
    }
    assert_eq!(
        sd.push(*ids.last().unwrap()).unwrap().as_deref(),
        Some("😀")
    );
    assert_eq!(sd.finish(), None);

    // An unfinished sequence at the end becomes U+FFFD, as in decode.
    let cut = &ids[..ids.len() - 1];
    let mut sd = tok.stream_decoder();
    assert_eq!(
        stream_pieces(&mut sd, cut).concat(),
        tok.decode(cut, true).unwrap()
    );
    assert!(tok.decode(cut, true).unwrap().contains('\u{FFFD}'));

    // Owned variant over an Arc, and special tokens rendered on request.
    let tok = Arc::new(tok);
    let ids = tok
        .encode("<|im_start|>user\nHi 👋<|im_end|>", true)
        .unwrap();
    let mut sd = StreamDecoder::new(Arc::clone(&tok), false);
    assert_eq!(
        stream_pieces(&mut sd, &ids).concat(),
        "<|im_start|>user\nHi 👋<|im_end|>"
    );
    let mut sd = StreamDecoder::new(Arc::clone(&tok), true);
    assert_eq!(stream_pieces(&mut sd, &ids).concat(), "user\nHi 👋");
}

#[test]
fn long_inputs_are_not_truncated() {
    let tok = default_tokenizer();
    for text in [
        " ".repeat(20_000),
        format!("a{}b", " ".repeat(20_000)),
        "\n".repeat(5_000),
        "word ".repeat(5_000),
        "x".repeat(20_000),
        "1234567890".repeat(1_000),
    ] {
        let ids = tok.encode(&text, false).unwrap();
        assert_eq!(tok.decode(&ids, true).unwrap(), text, "len {}", text.len());
    }
}

// ---- synthetic metadata -------------------------------------------------------------------

fn strings(v: &[&str]) -> MetaValue {
    MetaValue::Array(v.iter().map(|s| MetaValue::String(s.to_string())).collect())
}

/// A tiny byte-level BPE vocabulary: the 256 byte characters plus a few merges.
fn tiny_bpe(pre: &str) -> Metadata {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let mut seen = std::collections::HashSet::new();
    for b in 0..=255u8 {
        let c = byte_char(b);
        if seen.insert(c) {
            tokens.push(c.to_string());
        }
    }
    tokens.extend(["Ġt", "he", "Ġthe", "Ġhe"].map(String::from));
    let mut types = vec![MetaValue::I32(3); 3];
    types.extend(std::iter::repeat_n(MetaValue::I32(1), tokens.len() - 3));
    let mut m = Metadata::new();
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String("gpt2".into()),
    );
    m.insert("tokenizer.ggml.pre".into(), MetaValue::String(pre.into()));
    m.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::Array(tokens.into_iter().map(MetaValue::String).collect()),
    );
    m.insert("tokenizer.ggml.token_type".into(), MetaValue::Array(types));
    m.insert(
        "tokenizer.ggml.merges".into(),
        strings(&["Ġ t", "h e", "Ġt he", "Ġ he"]),
    );
    m.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(2));
    m
}

fn byte_char(b: u8) -> char {
    let mut n = 0u32;
    for x in 0..=255u8 {
        let visible = matches!(x, 33..=126 | 161..=172 | 174..=255);
        if x == b {
            return if visible {
                x as char
            } else {
                char::from_u32(256 + n).unwrap()
            };
        }
        if !visible {
            n += 1;
        }
    }
    unreachable!()
}

#[test]
fn tiny_bpe_pretokenizers() {
    for pre in ["gpt2", "default", "smollm", "llama-bpe", "qwen2"] {
        let tok =
            Tokenizer::from_gguf_metadata(&tiny_bpe(pre)).unwrap_or_else(|e| panic!("{pre}: {e}"));
        let the = tok.token_to_id("Ġthe").unwrap();
        let ids = tok.encode(" the the", false).unwrap();
        assert_eq!(ids, vec![the, the], "{pre}");
        assert_eq!(tok.decode(&ids, true).unwrap(), " the the");
        let ids = tok.encode("<|im_end|>x", true).unwrap();
        assert_eq!(ids[0], 2, "{pre}");
        assert!(tok.encode("<|im_end|>x", false).unwrap().len() > 2);
        assert_eq!(tok.eog_ids(), &[0, 2]);
    }
}

#[test]
fn error_paths() {
    let mut m = tiny_bpe("gpt2");
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String("xyz".into()),
    );
    let e = Tokenizer::from_gguf_metadata(&m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported tokenizer model 'xyz' (tokenizer.ggml.model)"
    );

    let m = tiny_bpe("no-such-pre");
    let e = Tokenizer::from_gguf_metadata(&m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported pre-tokenizer 'no-such-pre' (tokenizer.ggml.pre)"
    );

    let mut m = tiny_bpe("gpt2");
    let mut merges = vec![MetaValue::String("Ġ t".into()); 17];
    merges.push(MetaValue::U32(5));
    m.insert("tokenizer.ggml.merges".into(), MetaValue::Array(merges));
    let e = Tokenizer::from_gguf_metadata(&m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tokenizer.ggml.merges: entry 17 is not a string (u32)"
    );

    let mut m = tiny_bpe("gpt2");
    m.insert(
        "tokenizer.ggml.merges".into(),
        MetaValue::String("Ġ t".into()),
    );
    let e = Tokenizer::from_gguf_metadata(&m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tokenizer.ggml.merges: expected an array, found string"
    );

    let mut m = tiny_bpe("gpt2");
    m.remove("tokenizer.ggml.tokens");
    let e = Tokenizer::from_gguf_metadata(&m).unwrap_err();
    assert_eq!(e.to_string(), "tokenizer.ggml.tokens: missing");

    let mut m = tiny_bpe("gpt2");
    m.remove("tokenizer.ggml.model");
    let e = Tokenizer::from_gguf_metadata(&m).unwrap_err();
    assert_eq!(e.to_string(), "tokenizer.ggml.model: missing");

    let e = Tokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(
        e.to_string().starts_with("/nonexistent/tokenizer.json: "),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'));
}

// ---- SentencePiece (tokenizer.ggml.model = "llama") ---------------------------------------

fn tiny_spm() -> Metadata {
    // id: token, score, type
    let mut vocab: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
    ];
    for b in 0..=255u8 {
        vocab.push((format!("<0x{b:02X}>"), 0.0, 6));
    }
    for (t, s) in [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("▁h", -3.0),
        ("ll", -4.0),
        ("llo", -5.0),
        ("▁he", -6.0),
        ("▁hello", -7.0),
        ("▁w", -8.0),
        ("or", -8.5),
        ("▁wor", -9.0),
        ("ld", -9.5),
    ] {
        vocab.push((t.into(), s, 1));
    }
    let mut m = Metadata::new();
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String("llama".into()),
    );
    m.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::Array(
            vocab
                .iter()
                .map(|v| MetaValue::String(v.0.clone()))
                .collect(),
        ),
    );
    m.insert(
        "tokenizer.ggml.scores".into(),
        MetaValue::Array(vocab.iter().map(|v| MetaValue::F32(v.1)).collect()),
    );
    m.insert(
        "tokenizer.ggml.token_type".into(),
        MetaValue::Array(vocab.iter().map(|v| MetaValue::I32(v.2)).collect()),
    );
    m.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(1));
    m.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(2));
    m
}

#[test]
fn tiny_sentencepiece() {
    let tok = Tokenizer::from_gguf_metadata(&tiny_spm()).unwrap();
    let id = |s: &str| tok.token_to_id(s).unwrap();
    assert!(tok.add_bos());
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eog_ids(), &[2]);

    // "▁hello" merges fully; "▁world": ▁w+or -> "▁w","or"; "▁wor" (-9) beats "ld" (-9.5).
    let ids = tok.encode("hello world", false).unwrap();
    assert_eq!(ids, vec![id("▁hello"), id("▁wor"), id("ld")]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello world");

    // Unknown characters fall back to bytes; decode restores them.
    let ids = tok.encode("hé!", false).unwrap();
    assert_eq!(
        ids,
        vec![id("▁h"), id("<0xC3>"), id("<0xA9>"), id("<0x21>")]
    );
    assert_eq!(tok.decode(&ids, true).unwrap(), "hé!");

    // Special tokens: each text fragment gets the prefix space; BOS renders as nothing.
    let ids = tok.encode("<s>hello</s>hello", true).unwrap();
    assert_eq!(ids, vec![1, id("▁hello"), 2, id("▁hello")]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "<s> hello</s> hello");
    assert_eq!(tok.decode(&[1, id("▁hello")], true).unwrap(), " hello");

    let mut sd = tok.stream_decoder();
    let ids = tok.encode("hello world é", false).unwrap();
    assert_eq!(stream_pieces(&mut sd, &ids).concat(), "hello world é");
}

/// A byte-level BPE with a llama.cpp `clean_spaces` pre-tokenizer: streaming must still equal
/// whole decoding even though the clean-up looks ahead.
#[test]
fn stream_with_clean_spaces() {
    let tok = Tokenizer::from_gguf_metadata(&tiny_bpe("gpt2")).unwrap();
    for text in [
        "it 's a test , really ! he ' s here . we 're done ' ",
        " ' ' ' x ' s 'm 're 've , , . ? ! ",
        "no apostrophes here , at all .",
        "'",
        " '",
        "' ",
    ] {
        let ids = tok.encode(text, false).unwrap();
        let whole = tok.decode(&ids, true).unwrap();
        let mut sd = tok.stream_decoder();
        assert_eq!(stream_pieces(&mut sd, &ids).concat(), whole, "{text:?}");
    }
    let ids = tok.encode("Hello , world !", false).unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "Hello, world!");
}

/// Deterministic pseudo-random numbers (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// Random texts full of the characters llama.cpp's space clean-up reacts to: streaming one id
/// at a time must equal decoding all at once.
#[test]
fn stream_with_clean_spaces_random() {
    let tok = Tokenizer::from_gguf_metadata(&tiny_bpe("gpt2")).unwrap();
    let alphabet = [
        " ", " ", " ", "'", "'", "s", "m", "r", "e", "v", ".", ",", "?", "!", "x", "é", "\n",
    ];
    let mut rng = Lcg(7);
    for _ in 0..3000 {
        let len = 1 + rng.next(24);
        let text: String = (0..len)
            .map(|_| alphabet[rng.next(alphabet.len())])
            .collect();
        let ids = tok.encode(&text, false).unwrap();
        let whole = tok.decode(&ids, true).unwrap();
        let mut sd = tok.stream_decoder();
        assert_eq!(stream_pieces(&mut sd, &ids).concat(), whole, "{text:?}");
    }
}

/// Random id sequences (many of them byte tokens that form invalid UTF-8) on the default model:
/// the streamed text equals decode, invalid bytes included (as U+FFFD).
#[test]
fn stream_random_ids() {
    let tok = default_tokenizer();
    // Single-character tokens are single bytes in a byte-level vocabulary; pick mostly from
    // them (so that multi-byte characters get split and mangled), sometimes from all ids.
    let byte_ids: Vec<u32> = (0..tok.vocab_size() as u32)
        .filter(|&i| tok.id_to_token(i).is_some_and(|t| t.chars().count() == 1))
        .collect();
    assert!(
        byte_ids.len() >= 200,
        "{} single-byte tokens",
        byte_ids.len()
    );
    let mut rng = Lcg(11);
    for round in 0..500 {
        let len = 1 + rng.next(12);
        let ids: Vec<u32> = (0..len)
            .map(|_| {
                if rng.next(3) == 0 {
                    rng.next(tok.vocab_size()) as u32
                } else {
                    byte_ids[rng.next(byte_ids.len())]
                }
            })
            .collect();
        for skip in [true, false] {
            let whole = tok.decode(&ids, skip).unwrap();
            let mut sd = StreamDecoder::new(&tok, skip);
            assert_eq!(
                stream_pieces(&mut sd, &ids).concat(),
                whole,
                "round {round}: {ids:?}"
            );
        }
    }
}

// ---- tokenizer.json ------------------------------------------------------------------------

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minerva-tok-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn added(id: u32, content: &str, special: bool) -> serde_json::Value {
    serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": !special, "special": special})
}

#[test]
fn from_file_byte_level() {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .enumerate()
    {
        vocab.insert(t.to_string(), (i as u32).into());
    }
    let mut next = 3u32;
    for b in 0..=255u8 {
        vocab.insert(byte_char(b).to_string(), next.into());
        next += 1;
    }
    for t in ["Ġt", "he", "Ġthe"] {
        vocab.insert(t.to_string(), next.into());
        next += 1;
    }
    vocab.insert("<think>".to_string(), next.into());
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<|endoftext|>", true), added(1, "<|im_start|>", true),
                         added(2, "<|im_end|>", true), added(next, "<think>", false)],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": ["Ġ t", "h e", "Ġt he"]}
    });
    let dir = temp_dir("bytelevel");
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({"bos_token": null, "eos_token": "<|im_end|>",
            "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        serde_json::json!({"eos_token_id": [2, 0]}).to_string(),
    )
    .unwrap();

    let tok = Tokenizer::from_file(&dir).unwrap();
    let the = tok.token_to_id("Ġthe").unwrap();
    assert_eq!(tok.encode(" the the", false).unwrap(), vec![the, the]);
    assert_eq!(tok.encode("<|im_end|> the", true).unwrap(), vec![2, the]);
    let plain = tok.encode("<|im_end|> the", false).unwrap();
    assert!(plain.len() > 2 && !plain.contains(&2));
    // Non-special added tokens are always matched.
    assert_eq!(tok.encode("<think>", false).unwrap(), vec![next]);
    assert_eq!(
        tok.decode(&[2, the, next], false).unwrap(),
        "<|im_end|> the<think>"
    );
    assert_eq!(tok.decode(&[2, the, next], true).unwrap(), " the<think>");
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.eog_ids(), &[0, 2]);
    assert!(!tok.add_bos());
    assert_eq!(
        tok.chat_template(),
        Some("{% for m in messages %}{{ m.content }}{% endfor %}")
    );
    // The file path works as well as its directory.
    assert_eq!(
        Tokenizer::from_file(&dir.join("tokenizer.json"))
            .unwrap()
            .vocab_size(),
        tok.vocab_size()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn from_file_sentencepiece_style() {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), (i as u32).into());
    }
    let mut next = 3u32;
    for b in 0..=255u8 {
        vocab.insert(format!("<0x{b:02X}>"), next.into());
        next += 1;
    }
    for t in ["▁", "h", "i", "▁h", "▁hi"] {
        vocab.insert(t.to_string(), next.into());
        next += 1;
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                  "ignore_merges": false, "vocab": vocab, "merges": ["▁ h", "▁h i"]}
    });
    let dir = temp_dir("spm");
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({"bos_token": {"content": "<s>"}, "eos_token": "</s>"}).to_string(),
    )
    .unwrap();
    let tok = Tokenizer::from_file(&dir).unwrap();
    let id = |s: &str| tok.token_to_id(s).unwrap();
    assert!(
        tok.add_bos(),
        "add_bos from the TemplateProcessing post-processor"
    );
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    let ids = tok.encode("hi hé", false).unwrap();
    assert_eq!(ids, vec![id("▁hi"), id("▁h"), id("<0xC3>"), id("<0xA9>")]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "hi hé");
    assert_eq!(tok.decode(&[1, id("▁hi")], true).unwrap(), " hi");
    let mut sd = tok.stream_decoder();
    assert_eq!(stream_pieces(&mut sd, &ids).concat(), "hi hé");
    std::fs::remove_dir_all(&dir).ok();
}
