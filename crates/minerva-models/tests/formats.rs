//! Checkpoint readers: GGUF and safetensors files written here, plus the real default model
//! when it is installed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use minerva_core::DType;
use minerva_models::formats::gguf::{GgufFile, MetaValue};
use minerva_models::formats::safetensors::SafetensorsModel;
use minerva_models::formats::FormatError;
use safetensors::tensor::{Dtype, TensorView};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("minerva-formats-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks the error's shape (one line, starts with the path) and returns its text.
fn err_text(err: FormatError, path: &Path) -> String {
    let text = err.to_string();
    assert!(
        text.starts_with(&path.display().to_string()),
        "error does not start with the path {}: {text}",
        path.display()
    );
    assert!(!text.contains('\n'), "error is not one line: {text:?}");
    text
}

fn gguf_err(path: &Path) -> String {
    match GgufFile::open(path) {
        Ok(_) => panic!("{} opened but should not have", path.display()),
        Err(e) => err_text(e, path),
    }
}

fn st_err(path: &Path) -> (String, FormatError) {
    match SafetensorsModel::open(path) {
        Ok(_) => panic!("{} opened but should not have", path.display()),
        Err(e) => (e.to_string(), e),
    }
}

// ---------------------------------------------------------------------------------------------
// A small GGUF writer

fn meta_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

struct TensorSpec {
    name: String,
    ne: Vec<u64>,
    ggml_type: u32,
    data: Vec<u8>,
}

fn tensor(name: &str, ne: &[u64], ggml_type: u32, data: Vec<u8>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        ne: ne.to_vec(),
        ggml_type,
        data,
    }
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn value(&mut self, v: &MetaValue) {
        match v {
            MetaValue::U8(x) => self.0.push(*x),
            MetaValue::I8(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            MetaValue::U16(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I16(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            MetaValue::U32(x) => self.u32(*x),
            MetaValue::I32(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            MetaValue::U64(x) => self.u64(*x),
            MetaValue::I64(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F32(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F64(x) => self.0.extend_from_slice(&x.to_le_bytes()),
            MetaValue::Bool(x) => self.0.push(u8::from(*x)),
            MetaValue::String(s) => self.str(s),
            MetaValue::Array(items) => {
                self.u32(items.first().map_or(0, meta_type));
                self.u64(items.len() as u64);
                for item in items {
                    self.value(item);
                }
            }
        }
    }
}

/// A GGUF file: header, metadata, tensor infos, then the data section (tensors packed in
/// order, each padded to `alignment`). Returns the bytes and the header length.
fn gguf_bytes(
    version: u32,
    kvs: &[(&str, MetaValue)],
    tensors: &[TensorSpec],
    alignment: usize,
) -> (Vec<u8>, usize) {
    let mut w = Writer::default();
    w.0.extend_from_slice(b"GGUF");
    w.u32(version);
    w.u64(tensors.len() as u64);
    w.u64(kvs.len() as u64);
    for (k, v) in kvs {
        w.str(k);
        w.u32(meta_type(v));
        w.value(v);
    }
    let mut offset = 0usize;
    let mut offsets = Vec::new();
    for t in tensors {
        w.str(&t.name);
        w.u32(t.ne.len() as u32);
        for &d in &t.ne {
            w.u64(d);
        }
        w.u32(t.ggml_type);
        w.u64(offset as u64);
        offsets.push(offset);
        offset = (offset + t.data.len()).next_multiple_of(alignment);
    }
    let header_len = w.0.len();
    let data_start = header_len.next_multiple_of(alignment);
    w.0.resize(data_start, 0);
    for (t, off) in tensors.iter().zip(offsets) {
        w.0.resize(data_start + off, 0);
        w.0.extend_from_slice(&t.data);
    }
    (w.0, header_len)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn all_kinds_metadata() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("general.architecture", MetaValue::String("llama".into())),
        ("test.u8", MetaValue::U8(200)),
        ("test.i8", MetaValue::I8(-100)),
        ("test.u16", MetaValue::U16(60000)),
        ("test.i16", MetaValue::I16(-30000)),
        ("test.u32", MetaValue::U32(4_000_000_000)),
        ("test.i32", MetaValue::I32(-2_000_000_000)),
        ("test.u64", MetaValue::U64(u64::MAX)),
        ("test.i64", MetaValue::I64(42)),
        ("test.i64_neg", MetaValue::I64(-1)),
        ("test.f32", MetaValue::F32(1e-5)),
        ("test.f64", MetaValue::F64(10000.5)),
        ("test.bool", MetaValue::Bool(true)),
        ("test.string", MetaValue::String("héllo ✓".into())),
        ("test.empty_string", MetaValue::String(String::new())),
        (
            "test.strings",
            MetaValue::Array(vec![
                MetaValue::String("<s>".into()),
                MetaValue::String("Ġthe".into()),
                MetaValue::String(String::new()),
            ]),
        ),
        (
            "test.ints",
            MetaValue::Array((0..5).map(MetaValue::I32).collect()),
        ),
        (
            "test.nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::F32(1.0), MetaValue::F32(2.0)]),
                MetaValue::Array(vec![MetaValue::F32(3.0)]),
            ]),
        ),
        ("test.empty_array", MetaValue::Array(vec![])),
    ]
}

fn sample_tensors() -> Vec<TensorSpec> {
    vec![
        // ne [3, 2] -> shape [2, 3]
        tensor("a.f32", &[3, 2], 0, pattern(24, 1)),
        tensor("b.f16", &[5], 1, pattern(10, 2)),
        // ne [64, 2, 1] -> shape [1, 2, 64]; 4 blocks of 18 bytes
        tensor("c.q4_0", &[64, 2, 1], 2, pattern(72, 3)),
        tensor("d.q8_0", &[32], 8, pattern(34, 4)),
        tensor("e.q4_1", &[32, 3], 3, pattern(60, 5)),
        tensor("f.i32", &[2], 26, pattern(8, 6)),
        tensor("g.bf16", &[4], 30, pattern(8, 7)),
    ]
}

// ---------------------------------------------------------------------------------------------
// GGUF

fn check_round_trip(version: u32) {
    let dir = TempDir::new("gguf-rt");
    let kvs = all_kinds_metadata();
    let specs = sample_tensors();
    let (bytes, _) = gguf_bytes(version, &kvs, &specs, 32);
    let path = dir.write("model.gguf", &bytes);
    let f = GgufFile::open(&path).unwrap();

    assert_eq!(f.path(), path);
    assert_eq!(f.version(), version);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.metadata().len(), kvs.len());
    for (k, v) in &kvs {
        assert_eq!(f.metadata().get(*k), Some(v), "metadata key {k}");
    }

    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["a.f32", "b.f16", "c.q4_0", "d.q8_0", "e.q4_1", "f.i32", "g.bf16"]
    );
    let expect: [(&str, DType, &[usize]); 7] = [
        ("a.f32", DType::F32, &[2, 3]),
        ("b.f16", DType::F16, &[5]),
        ("c.q4_0", DType::Q4_0, &[1, 2, 64]),
        ("d.q8_0", DType::Q8_0, &[32]),
        ("e.q4_1", DType::Q4_1, &[3, 32]),
        ("f.i32", DType::I32, &[2]),
        ("g.bf16", DType::BF16, &[4]),
    ];
    for ((name, dtype, shape), spec) in expect.iter().zip(&specs) {
        let t = f.tensor(name).unwrap();
        assert_eq!(t.dtype, *dtype, "{name}");
        assert_eq!(t.shape, *shape, "{name}");
        assert_eq!(t.nbytes, spec.data.len(), "{name}");
        assert_eq!(t.bytes(), &spec.data[..], "{name}");
        assert_eq!((t.offset - f.data_offset()) % 32, 0, "{name}");
    }
    assert!(f.tensor("missing").is_none());

    // Typed getters.
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_str("test.string").unwrap(), "héllo ✓");
    assert_eq!(f.get_u32("test.u8").unwrap(), 200);
    assert_eq!(f.get_u32("test.u16").unwrap(), 60000);
    assert_eq!(f.get_u32("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u32("test.i64").unwrap(), 42);
    assert_eq!(f.get_f32("test.f32").unwrap(), 1e-5);
    assert_eq!(f.get_f32("test.f64").unwrap(), 10000.5);
    assert_eq!(f.get_opt_u32("nope").unwrap(), None);
    assert_eq!(f.get_opt_f32("nope").unwrap(), None);
    assert_eq!(f.get_opt_str("nope").unwrap(), None);
    assert_eq!(f.get_opt_u32("test.i8").ok(), None); // negative
    assert_eq!(f.get_array("test.ints").unwrap().len(), 5);
    assert_eq!(
        f.get_array("test.strings").unwrap()[1].as_str(),
        Some("Ġthe")
    );

    for (result, key) in [
        (f.get_u32("test.u64").map(|_| ()), "test.u64"),
        (f.get_u32("test.i64_neg").map(|_| ()), "test.i64_neg"),
        (f.get_u32("test.string").map(|_| ()), "test.string"),
        (f.get_f32("test.u32").map(|_| ()), "test.u32"),
        (f.get_str("test.bool").map(|_| ()), "test.bool"),
        (f.get_array("test.f32").map(|_| ()), "test.f32"),
        (f.get_opt_str("test.u8").map(|_| ()), "test.u8"),
        (f.get_str("absent.key").map(|_| ()), "absent.key"),
        (f.get_u32("absent.key").map(|_| ()), "absent.key"),
    ] {
        let text = err_text(result.unwrap_err(), &path);
        assert!(text.contains(key), "{text}");
    }
}

#[test]
fn gguf_round_trip_v3() {
    check_round_trip(3);
}

#[test]
fn gguf_round_trip_v2() {
    check_round_trip(2);
}

#[test]
fn gguf_alignment_key() {
    let dir = TempDir::new("gguf-align");
    let kvs = vec![
        ("general.architecture", MetaValue::String("llama".into())),
        ("general.alignment", MetaValue::U32(64)),
    ];
    let specs = sample_tensors();
    let (bytes, header_len) = gguf_bytes(3, &kvs, &specs, 64);
    let path = dir.write("aligned.gguf", &bytes);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset(), header_len.next_multiple_of(64));
    for (t, spec) in f.tensors().iter().zip(&specs) {
        assert_eq!(t.offset % 64, 0);
        assert_eq!(t.bytes(), &spec.data[..]);
    }

    for bad in [
        MetaValue::U32(0),
        MetaValue::U32(48),
        MetaValue::String("x".into()),
    ] {
        let kvs = vec![("general.alignment", bad)];
        let (bytes, _) = gguf_bytes(3, &kvs, &[], 32);
        let path = dir.write("bad-align.gguf", &bytes);
        let text = gguf_err(&path);
        assert!(text.contains("general.alignment"), "{text}");
    }
}

#[test]
fn gguf_misaligned_offset_and_bad_blocks() {
    let dir = TempDir::new("gguf-misc");
    // Offsets packed with alignment 16 while the file claims the default 32.
    let specs = vec![
        tensor("x", &[4], 0, pattern(16, 0)),
        tensor("y", &[4], 0, pattern(16, 1)),
    ];
    let (bytes, _) = gguf_bytes(3, &[], &specs, 16);
    let path = dir.write("misaligned.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(text.contains("'y'") && text.contains("aligned"), "{text}");

    // Q8_0 with an innermost dim that is not a whole number of blocks.
    let (bytes, _) = gguf_bytes(3, &[], &[tensor("q", &[16, 2], 8, pattern(34, 0))], 32);
    let path = dir.write("partial-block.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(text.contains("'q'") && text.contains("block"), "{text}");

    // Duplicate tensor names.
    let specs = vec![
        tensor("dup", &[4], 0, pattern(16, 0)),
        tensor("dup", &[4], 0, pattern(16, 1)),
    ];
    let (bytes, _) = gguf_bytes(3, &[], &specs, 32);
    let path = dir.write("dup.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(
        text.contains("duplicate") && text.contains("'dup'"),
        "{text}"
    );

    // Duplicate metadata keys.
    let kvs = vec![("k", MetaValue::U8(1)), ("k", MetaValue::U8(2))];
    let (bytes, _) = gguf_bytes(3, &kvs, &[], 32);
    let path = dir.write("dupkey.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(text.contains("duplicate") && text.contains("'k'"), "{text}");

    // Too many dims.
    let (bytes, _) = gguf_bytes(3, &[], &[tensor("d9", &[1; 9], 0, pattern(4, 0))], 32);
    let path = dir.write("dims.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(
        text.contains("'d9'") && text.contains("dimensions"),
        "{text}"
    );

    // Zero tensors, zero metadata is a valid (empty) file.
    let (bytes, _) = gguf_bytes(3, &[], &[], 32);
    let path = dir.write("empty.gguf", &bytes);
    let f = GgufFile::open(&path).unwrap();
    assert!(f.tensors().is_empty());
    assert!(f.metadata().is_empty());
    assert!(err_text(f.architecture().unwrap_err(), &path).contains("general.architecture"));
}

#[test]
fn gguf_truncated_anywhere() {
    let dir = TempDir::new("gguf-trunc");
    let kvs = all_kinds_metadata();
    let specs = sample_tensors();
    let (bytes, header_len) = gguf_bytes(3, &kvs, &specs, 32);
    let path = dir.path_for("cut.gguf");
    // Every cut point: inside the header and inside the data.
    for cut in 0..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let text = gguf_err(&path);
        assert!(text.contains("truncated"), "cut at {cut}: {text}");
        if cut < header_len {
            assert!(text.contains("truncated header"), "cut at {cut}: {text}");
        }
    }
    // A cut in the data names the tensor and the byte range.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let text = gguf_err(&path);
    let last = f_last_range(&bytes, &specs);
    assert!(
        text.contains(&format!(
            "truncated: tensor 'g.bf16' needs bytes {last} but the file has {} bytes",
            bytes.len() - 1
        )),
        "{text}"
    );
}

/// The `start..end` byte range of the last sample tensor (it is the file's tail).
fn f_last_range(bytes: &[u8], specs: &[TensorSpec]) -> String {
    let len = specs.last().unwrap().data.len();
    format!("{}..{}", bytes.len() - len, bytes.len())
}

impl TempDir {
    fn path_for(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

#[test]
fn gguf_bad_magic_and_versions() {
    let dir = TempDir::new("gguf-magic");
    let (mut bytes, _) = gguf_bytes(3, &[], &[], 32);
    bytes[..4].copy_from_slice(b"GGML");
    let path = dir.write("magic.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(text.contains("not a GGUF file"), "{text}");

    let (bytes, _) = gguf_bytes(1, &[], &[], 32);
    let path = dir.write("v1.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(text.contains("version 1"), "{text}");

    let (mut bytes, _) = gguf_bytes(3, &[], &[], 32);
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let path = dir.write("be.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(text.contains("big-endian"), "{text}");

    let (bytes, _) = gguf_bytes(7, &[], &[], 32);
    let path = dir.write("v7.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(text.contains("version 7"), "{text}");

    let path = dir.write("empty.gguf", b"");
    let text = gguf_err(&path);
    assert!(text.contains("truncated header"), "{text}");

    let missing = dir.path_for("nonexistent.gguf");
    let text = gguf_err(&missing);
    assert!(text.contains("nonexistent.gguf"), "{text}");
}

#[test]
fn gguf_unsupported_type() {
    let dir = TempDir::new("gguf-type");
    let specs = vec![
        tensor("token_embd.weight", &[32], 8, pattern(34, 0)),
        tensor("blk.0.attn_q.weight", &[256], 12, pattern(144, 0)),
    ];
    let (bytes, _) = gguf_bytes(3, &[], &specs, 32);
    let path = dir.write("q4k.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(
        text.contains("tensor 'blk.0.attn_q.weight' has unsupported type q4_k (ggml type 12)"),
        "{text}"
    );

    let (bytes, _) = gguf_bytes(3, &[], &[tensor("w", &[4], 1000, vec![0; 8])], 32);
    let path = dir.write("unknown.gguf", &bytes);
    let text = gguf_err(&path);
    assert!(text.contains("'w'") && text.contains("1000"), "{text}");
}

/// Header with the given counts followed by `tail`.
fn raw_header(tensor_count: u64, kv_count: u64, tail: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.0.extend_from_slice(b"GGUF");
    w.u32(3);
    w.u64(tensor_count);
    w.u64(kv_count);
    w.0.extend_from_slice(tail);
    w.0
}

#[test]
fn gguf_absurd_counts() {
    let dir = TempDir::new("gguf-absurd");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("tensors", raw_header(u64::MAX, 0, &[0; 64])),
        ("tensors2", raw_header(1 << 40, 0, &[0; 64])),
        ("kvs", raw_header(0, u64::MAX, &[0; 64])),
        ("kvs2", raw_header(0, 1 << 33, &[0; 64])),
    ];
    // Key string length absurd.
    let mut w = Writer::default();
    w.u64(u64::MAX - 3);
    w.0.extend_from_slice(&[0; 32]);
    cases.push(("keylen", raw_header(0, 1, &w.0)));
    // String value length absurd.
    let mut w = Writer::default();
    w.str("k");
    w.u32(8);
    w.u64(1 << 50);
    cases.push(("strlen", raw_header(0, 1, &w.0)));
    // Array length absurd, for several element types.
    for elem in [0u32, 6, 8, 9, 12] {
        let mut w = Writer::default();
        w.str("k");
        w.u32(9);
        w.u32(elem);
        w.u64(u64::MAX / 2);
        w.0.extend_from_slice(&[0; 32]);
        cases.push(("arraylen", raw_header(0, 1, &w.0)));
    }
    // Unknown value type and unknown array element type.
    let mut w = Writer::default();
    w.str("k");
    w.u32(77);
    w.0.extend_from_slice(&[0; 32]);
    cases.push(("valtype", raw_header(0, 1, &w.0)));
    let mut w = Writer::default();
    w.str("k");
    w.u32(9);
    w.u32(77);
    w.u64(1);
    w.0.extend_from_slice(&[0; 32]);
    cases.push(("elemtype", raw_header(0, 1, &w.0)));
    // Arrays nested far too deep.
    let mut w = Writer::default();
    w.str("k");
    w.u32(9);
    for _ in 0..10_000 {
        w.u32(9);
        w.u64(1);
    }
    cases.push(("deep", raw_header(0, 1, &w.0)));
    // n_dims absurd.
    let mut w = Writer::default();
    w.str("t");
    w.u32(u32::MAX);
    w.0.extend_from_slice(&[0; 64]);
    cases.push(("ndims", raw_header(1, 0, &w.0)));
    // Dims whose product overflows.
    let mut w = Writer::default();
    w.str("t");
    w.u32(4);
    for _ in 0..4 {
        w.u64(u64::MAX / 3);
    }
    w.u32(0);
    w.u64(0);
    cases.push(("overflow", raw_header(1, 0, &w.0)));
    // Offset near u64::MAX.
    let mut w = Writer::default();
    w.str("t");
    w.u32(1);
    w.u64(4);
    w.u32(0);
    w.u64(u64::MAX - 31);
    cases.push(("offset", raw_header(1, 0, &w.0)));
    // Invalid UTF-8 in a key.
    let mut w = Writer::default();
    w.u64(2);
    w.0.extend_from_slice(&[0xff, 0xfe]);
    w.u32(0);
    w.0.push(0);
    cases.push(("utf8", raw_header(0, 1, &w.0)));
    // Bool with a byte other than 0/1.
    let mut w = Writer::default();
    w.str("b");
    w.u32(7);
    w.0.push(9);
    cases.push(("bool", raw_header(0, 1, &w.0)));

    for (name, bytes) in cases {
        let path = dir.write(&format!("{name}.gguf"), &bytes);
        let text = gguf_err(&path);
        eprintln!("{name}: {text}");
        if name.ends_with("len") || name.starts_with("tensors") || name.starts_with("kvs") {
            assert!(text.contains("truncated header or corrupt"), "{text}");
        }
    }
}

#[test]
fn gguf_random_corruption_never_panics() {
    let dir = TempDir::new("gguf-fuzz");
    let kvs = all_kinds_metadata();
    let specs = sample_tensors();
    let (bytes, header_len) = gguf_bytes(3, &kvs, &specs, 32);
    let path = dir.path_for("fuzz.gguf");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..400 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % header_len;
            b[i] = next() as u8;
        }
        std::fs::write(&path, &b).unwrap();
        // Ok or a well-formed error; never a panic or a huge allocation.
        if let Err(e) = GgufFile::open(&path) {
            err_text(e, &path);
        }
    }
}

#[test]
fn default_model_gguf() {
    let home = std::env::var_os("MINERVA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/minerva")));
    let Some(home) = home else {
        eprintln!("skipping: neither MINERVA_HOME nor HOME is set");
        return;
    };
    let path = home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.is_file() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let start = std::time::Instant::now();
    let f = GgufFile::open(&path).unwrap();
    eprintln!("opened {} in {:?}", path.display(), start.elapsed());
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.dtype, DType::Q8_0);
    assert_eq!(emb.shape, [49152, 576]);
    assert_eq!(emb.nbytes, 49152 * 576 / 32 * 34);
    assert!(f.tensors().iter().any(|t| t.dtype == DType::Q4_1));
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    let end = f
        .tensors()
        .iter()
        .map(|t| t.offset + t.nbytes)
        .max()
        .unwrap();
    assert!(end <= f.map().len());
}

// ---------------------------------------------------------------------------------------------
// Safetensors

struct StTensor {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn st(name: &'static str, dtype: Dtype, shape: &[usize], seed: u8) -> StTensor {
    let n: usize = shape.iter().product::<usize>() * dtype.bitsize() / 8;
    StTensor {
        name,
        dtype,
        shape: shape.to_vec(),
        data: pattern(n, seed),
    }
}

fn st_bytes(tensors: &[StTensor], meta: Option<&[(&str, &str)]>) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name,
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    let meta: Option<HashMap<String, String>> = meta.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    safetensors::serialize(views, meta).unwrap()
}

fn check_tensors(model: &SafetensorsModel, expect: &[&StTensor]) {
    let mut expect: Vec<&StTensor> = expect.to_vec();
    expect.sort_by_key(|t| t.name);
    let names: Vec<&str> = model.tensors().iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = expect.iter().map(|t| t.name).collect();
    assert_eq!(names, want);
    assert_eq!(model.len(), expect.len());
    for e in expect {
        let t = model.tensor(e.name).unwrap();
        assert_eq!(t.shape, e.shape, "{}", e.name);
        assert_eq!(t.nbytes, e.data.len(), "{}", e.name);
        assert_eq!(t.bytes(), &e.data[..], "{}", e.name);
    }
}

#[test]
fn safetensors_single_file() {
    let dir = TempDir::new("st-single");
    let tensors = vec![
        st("model.norm.weight", Dtype::F32, &[8], 1),
        st("lm_head.weight", Dtype::BF16, &[4, 8], 2),
        st("ids", Dtype::I32, &[3], 3),
        st("bytes", Dtype::U8, &[5], 4),
        st("half", Dtype::F16, &[2, 2], 5),
        st("words", Dtype::U32, &[1], 6),
        st("empty", Dtype::F32, &[0, 4], 7),
    ];
    let bytes = st_bytes(&tensors, Some(&[("format", "mlx")]));
    let path = dir.write("model.safetensors", &bytes);
    let all: Vec<&StTensor> = tensors.iter().collect();

    for p in [&path, &dir.0] {
        let m = SafetensorsModel::open(p).unwrap();
        check_tensors(&m, &all);
        assert!(!m.is_empty());
        assert_eq!(m.metadata().get("format").map(String::as_str), Some("mlx"));
        assert_eq!(m.tensor("lm_head.weight").unwrap().dtype, DType::BF16);
        assert_eq!(m.tensor("ids").unwrap().dtype, DType::I32);
        assert_eq!(m.tensor("bytes").unwrap().dtype, DType::U8);
        assert_eq!(m.tensor("words").unwrap().dtype, DType::U32);
        assert_eq!(m.tensor("half").unwrap().dtype, DType::F16);
        assert!(m.tensor("nope").is_none());
        assert_eq!(m.files().len(), 1);
    }

    // No __metadata__ at all.
    let bytes = st_bytes(&tensors[..1], None);
    let path = dir.write("plain.safetensors", &bytes);
    let m = SafetensorsModel::open(&path).unwrap();
    assert!(m.metadata().is_empty());
}

#[test]
fn safetensors_unsupported_dtype_and_truncation() {
    let dir = TempDir::new("st-bad");
    let tensors = vec![
        st("ok", Dtype::F32, &[2], 1),
        st("double", Dtype::F64, &[2], 2),
    ];
    let path = dir.write("f64.safetensors", &st_bytes(&tensors, None));
    let (text, e) = st_err(&path);
    err_text(e, &path);
    assert!(text.contains("'double'") && text.contains("F64"), "{text}");

    let tensors = vec![st("a", Dtype::F32, &[16], 1), st("b", Dtype::F16, &[16], 2)];
    let bytes = st_bytes(&tensors, None);
    let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let path = dir.path_for("cut.safetensors");
    for cut in [
        0,
        4,
        8,
        20,
        header_len - 1,
        header_len,
        header_len + 3,
        bytes.len() - 1,
    ] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let (text, e) = st_err(&path);
        err_text(e, &path);
        assert!(text.contains("truncated"), "cut at {cut}: {text}");
    }
    // Extra bytes at the end.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0; 5]);
    let path = dir.write("padded.safetensors", &padded);
    let (text, e) = st_err(&path);
    err_text(e, &path);
    assert!(text.contains("5 extra"), "{text}");

    // Garbage header.
    let mut garbage = 16u64.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"{not json at all");
    let path = dir.write("garbage.safetensors", &garbage);
    let (_, e) = st_err(&path);
    err_text(e, &path);
}

/// Two shards plus an index; shard 2 also holds a tensor the weight map does not mention.
fn write_sharded(dir: &TempDir) -> (Vec<StTensor>, Vec<StTensor>) {
    let s1 = vec![
        st("model.embed_tokens.weight", Dtype::F32, &[4, 4], 1),
        st("model.layers.0.w", Dtype::BF16, &[4, 2], 2),
    ];
    let s2 = vec![
        st("model.layers.1.w", Dtype::BF16, &[4, 2], 3),
        st("lm_head.weight", Dtype::F16, &[4, 4], 4),
        st("extra.unmapped", Dtype::U8, &[3], 5),
    ];
    dir.write(
        "model-00001-of-00002.safetensors",
        &st_bytes(&s1, Some(&[("format", "pt")])),
    );
    dir.write("model-00002-of-00002.safetensors", &st_bytes(&s2, None));
    let index = r#"{
  "metadata": {"total_size": 1234},
  "weight_map": {
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.layers.0.w": "model-00001-of-00002.safetensors",
    "model.layers.1.w": "model-00002-of-00002.safetensors",
    "lm_head.weight": "model-00002-of-00002.safetensors"
  }
}"#;
    dir.write("model.safetensors.index.json", index.as_bytes());
    (s1, s2)
}

#[test]
fn safetensors_sharded_index() {
    let dir = TempDir::new("st-shard");
    let (s1, s2) = write_sharded(&dir);
    // A stray single file next to the index must be ignored: the index is preferred.
    dir.write(
        "model.safetensors",
        &st_bytes(&[st("stray", Dtype::F32, &[1], 0)], None),
    );
    let all: Vec<&StTensor> = s1.iter().chain(&s2).collect();
    for p in [dir.0.clone(), dir.path_for("model.safetensors.index.json")] {
        let m = SafetensorsModel::open(&p).unwrap();
        check_tensors(&m, &all);
        assert_eq!(m.files().len(), 2);
        assert_eq!(m.metadata().get("format").map(String::as_str), Some("pt"));
        // Offsets are absolute and tensors point into the right shard.
        let t = m.tensor("lm_head.weight").unwrap();
        assert_eq!(t.dtype, DType::F16);
        assert!(std::sync::Arc::ptr_eq(&t.map, &m.files()[1].1));
    }
}

#[test]
fn safetensors_index_errors() {
    // Corrupt JSON.
    let dir = TempDir::new("st-idx-json");
    write_sharded(&dir);
    let index = dir.write("model.safetensors.index.json", b"{\"weight_map\": {\"a\": ");
    for p in [&dir.0, &index] {
        let (text, e) = st_err(p);
        err_text(e, &index);
        assert!(text.contains("invalid index JSON"), "{text}");
    }
    // Valid JSON without weight_map.
    dir.write("model.safetensors.index.json", b"{\"metadata\": {}}");
    let (text, e) = st_err(&index);
    err_text(e, &index);
    assert!(text.contains("weight_map"), "{text}");

    // Missing shard.
    let dir = TempDir::new("st-idx-missing");
    write_sharded(&dir);
    std::fs::remove_file(dir.path_for("model-00002-of-00002.safetensors")).unwrap();
    let index = dir.path_for("model.safetensors.index.json");
    let (text, e) = st_err(&dir.0);
    err_text(e, &index);
    assert!(text.contains("model-00002-of-00002.safetensors"), "{text}");

    // Tensor mapped to the wrong shard.
    let dir = TempDir::new("st-idx-wrong");
    write_sharded(&dir);
    let index = dir.write(
        "model.safetensors.index.json",
        br#"{"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors",
                            "model.layers.1.w": "model-00002-of-00002.safetensors"}}"#,
    );
    let (text, e) = st_err(&dir.0);
    err_text(e, &index);
    assert!(
        text.contains(
            "tensor 'lm_head.weight' is mapped to 'model-00001-of-00002.safetensors' but that file does not hold it"
        ),
        "{text}"
    );

    // A truncated shard names the shard.
    let dir = TempDir::new("st-idx-trunc");
    write_sharded(&dir);
    let shard = dir.path_for("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 2]).unwrap();
    let (text, e) = st_err(&dir.0);
    err_text(e, &shard);
    assert!(text.contains("truncated"), "{text}");
}

#[test]
fn safetensors_directory_of_files() {
    let dir = TempDir::new("st-dir");
    let a = vec![st("a.w", Dtype::F32, &[2], 1)];
    let b = vec![
        st("b.w", Dtype::F32, &[3], 2),
        st("c.w", Dtype::U8, &[1], 3),
    ];
    dir.write("part-b.safetensors", &st_bytes(&b, None));
    dir.write(
        "part-a.safetensors",
        &st_bytes(&a, Some(&[("format", "mlx")])),
    );
    dir.write("notes.txt", b"not a checkpoint");
    let m = SafetensorsModel::open(&dir.0).unwrap();
    let all: Vec<&StTensor> = a.iter().chain(&b).collect();
    check_tensors(&m, &all);
    // Files are read in sorted order; metadata comes from the first.
    assert!(m.files()[0].0.ends_with("part-a.safetensors"));
    assert_eq!(m.metadata().get("format").map(String::as_str), Some("mlx"));

    // The same tensor in two files.
    let dup = dir.write("part-c.safetensors", &st_bytes(&a, None));
    let (text, e) = st_err(&dir.0);
    err_text(e, &dup);
    assert!(text.contains("'a.w'"), "{text}");

    // A directory with no checkpoint at all.
    let empty = TempDir::new("st-empty");
    let (text, e) = st_err(&empty.0);
    err_text(e, &empty.0);
    assert!(text.contains(".safetensors"), "{text}");

    // A path that does not exist.
    let missing = empty.path_for("nope.safetensors");
    let (_, e) = st_err(&missing);
    err_text(e, &missing);
}

#[test]
fn safetensors_repo_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llama");
    if !path.is_dir() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let m = SafetensorsModel::open(&path).unwrap();
    let t = m.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(t.dtype, DType::F32);
    assert_eq!(t.shape, [256, 64]);
    assert_eq!(m.metadata().get("format").map(String::as_str), Some("pt"));
}

/// MLX's own quantizations (`mx.quantize` in mlx 0.32.4; `scripts/fixtures/make_mlx_quant_fixtures.py`)
/// of one [8, 256] weight, in every affine width (2, 3, 4, 5, 6, 8 bits) and group size
/// (32, 64, 128), plus MXFP4 and bf16-parameter variants: our dequantization must equal
/// `mx.dequantize` exactly (both compute `scale * q + bias` in f32 for each value; with bf16
/// parameters mlx computes in bf16, so those agree to bf16 precision).
#[test]
fn mlx_quantizations_dequantize_exactly() {
    use minerva_models::checkpoint::Checkpoint;
    use minerva_models::formats::safetensors::SafetensorsModel;

    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mlx-quant/quant.safetensors");
    let checkpoint = Checkpoint::Safetensors(SafetensorsModel::open(&path).unwrap());
    let mut names: Vec<String> = (2..=8)
        .filter(|b| *b != 7)
        .flat_map(|b| [32, 64, 128].map(|g| format!("affine_b{b}_g{g}")))
        .collect();
    names.extend(["affine_b4_g64_bf16", "mxfp4", "mxfp4_bf16"].map(String::from));
    for name in names {
        let w = checkpoint
            .weight(&format!("{name}.weight"), &[8, 256])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = w.to_f32_vec().unwrap();
        let theirs = checkpoint
            .f32_tensor(&format!("{name}.dequant"), &[8, 256])
            .unwrap();
        let theirs = theirs.as_f32().unwrap();
        let same = if name.ends_with("bf16") {
            // mlx computes bf16 results in bf16 (`round(round(q * s) + b)`), we in f32: two
            // roundings of at most 2^-9 of |q * s| and of the result, whose magnitudes are
            // bounded by the group's range, so 2^-7 of the largest value in the group.
            ours.chunks(64).zip(theirs.chunks(64)).all(|(a, b)| {
                let range = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                a.iter().zip(b).all(|(x, y)| (x - y).abs() <= range / 128.0)
            })
        } else {
            ours.iter()
                .zip(theirs)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        };
        assert!(
            same,
            "{name} ({}): dequantization differs from mlx",
            w.dtype()
        );
    }
}
