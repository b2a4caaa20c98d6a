//! GGUF (v2/v3) reader: header, metadata key/values, tensor infos, aligned data section.

use std::collections::BTreeMap;

/// One GGUF metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

/// Metadata of a GGUF file, keyed like `general.architecture` or `llama.block_count`.
pub type Metadata = BTreeMap<String, MetaValue>;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use minerva_core::DType;

use super::{map_file, FormatError, TensorInfo};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;
const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml supports at most 4 dims; anything above 8 is certainly garbage.
const MAX_DIMS: usize = 8;
/// Arrays of arrays deeper than this are rejected (keeps recursion bounded).
const MAX_ARRAY_DEPTH: usize = 8;

// Metadata value type ids.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// A parsed, validated GGUF file whose tensors point into its mapping.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    alignment: usize,
    data_offset: usize,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Maps and parses `path`, validating the header, every tensor's type, shape and byte range.
    pub fn open(path: &Path) -> Result<GgufFile, FormatError> {
        let map = map_file(path)?;
        let parsed = parse(&map).map_err(|message| FormatError::invalid(path, message))?;
        let Parsed {
            version,
            metadata,
            raw_tensors,
            alignment,
            data_offset,
        } = parsed;
        let mut tensors = Vec::with_capacity(raw_tensors.len());
        let mut index = HashMap::with_capacity(raw_tensors.len());
        for raw in raw_tensors {
            let info = raw
                .into_tensor_info(&map, data_offset, alignment)
                .map_err(|message| FormatError::invalid(path, message))?;
            if index.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(FormatError::invalid(
                    path,
                    format!("duplicate tensor name '{}'", info.name),
                ));
            }
            tensors.push(info);
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version,
            metadata,
            tensors,
            index,
            alignment,
            data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The mapping of the whole file.
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    /// Alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute byte offset of the data section.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// `general.architecture`, e.g. `llama`.
    pub fn architecture(&self) -> Result<&str, FormatError> {
        self.get_str("general.architecture")
    }

    fn missing(&self, key: &str) -> FormatError {
        FormatError::invalid(&self.path, format!("metadata key '{key}' is missing"))
    }

    fn wrong_type(&self, key: &str, value: &MetaValue, expected: &str) -> FormatError {
        FormatError::invalid(
            &self.path,
            format!(
                "metadata key '{key}' has type {}, expected {expected}",
                value.type_name()
            ),
        )
    }

    pub fn get_str(&self, key: &str) -> Result<&str, FormatError> {
        self.get_opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// Any integer value that fits in a `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, FormatError> {
        self.get_opt_u32(key)?.ok_or_else(|| self.missing(key))
    }

    /// An `F32` or `F64` value.
    pub fn get_f32(&self, key: &str) -> Result<f32, FormatError> {
        self.get_opt_f32(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn get_opt_str(&self, key: &str) -> Result<Option<&str>, FormatError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(MetaValue::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, v, "string")),
        }
    }

    pub fn get_opt_u32(&self, key: &str) -> Result<Option<u32>, FormatError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i128().map(u32::try_from) {
                Some(Ok(x)) => Ok(Some(x)),
                Some(Err(_)) => Err(FormatError::invalid(
                    &self.path,
                    format!("metadata key '{key}' = {v:?} does not fit in u32"),
                )),
                None => Err(self.wrong_type(key, v, "an integer")),
            },
        }
    }

    pub fn get_opt_f32(&self, key: &str) -> Result<Option<f32>, FormatError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(MetaValue::F32(x)) => Ok(Some(*x)),
            Some(MetaValue::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(self.wrong_type(key, v, "f32")),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&[MetaValue], FormatError> {
        match self.metadata.get(key) {
            None => Err(self.missing(key)),
            Some(MetaValue::Array(a)) => Ok(a),
            Some(v) => Err(self.wrong_type(key, v, "array")),
        }
    }
}

impl MetaValue {
    /// The GGUF name of the value's type (`u32`, `string`, `array`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }

    /// The value of any integer variant, widened.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(x) => x.into(),
            MetaValue::I8(x) => x.into(),
            MetaValue::U16(x) => x.into(),
            MetaValue::I16(x) => x.into(),
            MetaValue::U32(x) => x.into(),
            MetaValue::I32(x) => x.into(),
            MetaValue::U64(x) => x.into(),
            MetaValue::I64(x) => x.into(),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// The name ggml gives a tensor type id, for error messages.
pub fn ggml_type_name(id: u32) -> &'static str {
    match id {
        0 => "f32",
        1 => "f16",
        2 => "q4_0",
        3 => "q4_1",
        4 => "q4_2 (removed)",
        5 => "q4_3 (removed)",
        6 => "q5_0",
        7 => "q5_1",
        8 => "q8_0",
        9 => "q8_1",
        10 => "q2_k",
        11 => "q3_k",
        12 => "q4_k",
        13 => "q5_k",
        14 => "q6_k",
        15 => "q8_k",
        16 => "iq2_xxs",
        17 => "iq2_xs",
        18 => "iq3_xxs",
        19 => "iq1_s",
        20 => "iq4_nl",
        21 => "iq3_s",
        22 => "iq2_s",
        23 => "iq4_xs",
        24 => "i8",
        25 => "i16",
        26 => "i32",
        27 => "i64",
        28 => "f64",
        29 => "iq1_m",
        30 => "bf16",
        31 => "q4_0_4_4 (removed)",
        32 => "q4_0_4_8 (removed)",
        33 => "q4_0_8_8 (removed)",
        34 => "tq1_0",
        35 => "tq2_0",
        36 => "iq4_nl_4_4 (removed)",
        37 => "iq4_nl_4_8 (removed)",
        38 => "iq4_nl_8_8 (removed)",
        39 => "mxfp4",
        _ => "unknown",
    }
}

/// The [`DType`] for a ggml type id, if Minerva supports it.
pub fn dtype_from_ggml(id: u32) -> Option<DType> {
    Some(match id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        8 => DType::Q8_0,
        26 => DType::I32,
        30 => DType::BF16,
        _ => return None,
    })
}

/// Reads little-endian values from the mapped bytes; every read is bounds-checked and a
/// short read reports `truncated header (...)`.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

type ParseResult<T> = Result<T, String>;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> ParseResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "truncated header (reading {} needs {n} bytes at offset {}, but the file has {} bytes)",
                what(),
                self.pos,
                self.buf.len()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> ParseResult<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> ParseResult<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> ParseResult<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count of items, each at least `min_item_bytes` long: it cannot exceed what is left.
    fn count(&mut self, min_item_bytes: usize, what: &dyn Fn() -> String) -> ParseResult<usize> {
        let start = self.pos;
        let n = self.u64(what)?;
        let limit = self.remaining() / min_item_bytes.max(1);
        match usize::try_from(n) {
            Ok(n) if n <= limit => Ok(n),
            _ => Err(format!(
                "truncated header or corrupt count ({} = {n} at offset {start}, but only {} bytes remain)",
                what(),
                self.remaining()
            )),
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> ParseResult<String> {
        let len = self.count(1, &|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(format!("{} is not valid UTF-8 ({e})", what())),
        }
    }

    fn value(
        &mut self,
        ty: u32,
        depth: usize,
        what: &dyn Fn() -> String,
    ) -> ParseResult<MetaValue> {
        Ok(match ty {
            T_U8 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            T_I8 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            T_U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            T_I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            T_U32 => MetaValue::U32(u32::from_le_bytes(self.array(what)?)),
            T_I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            T_U64 => MetaValue::U64(u64::from_le_bytes(self.array(what)?)),
            T_I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            T_F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            T_F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            T_BOOL => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(format!("{} is a bool with invalid byte {b}", what())),
            },
            T_STRING => MetaValue::String(self.string(what)?),
            T_ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!(
                        "{} nests arrays deeper than {MAX_ARRAY_DEPTH} levels",
                        what()
                    ));
                }
                let elem = self.u32(&|| format!("element type of {}", what()))?;
                let min = min_value_bytes(elem)
                    .ok_or_else(|| format!("{} has unknown element type {elem}", what()))?;
                let n = self.count(min, &|| format!("length of {}", what()))?;
                let mut items = Vec::with_capacity(n);
                for i in 0..n {
                    items.push(self.value(elem, depth + 1, &|| format!("{}[{i}]", what()))?);
                }
                MetaValue::Array(items)
            }
            _ => return Err(format!("{} has unknown value type {ty}", what())),
        })
    }
}

/// The fewest bytes a value of metadata type `ty` takes, or `None` for an unknown type.
fn min_value_bytes(ty: u32) -> Option<usize> {
    Some(match ty {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 | T_STRING => 8,
        T_ARRAY => 12,
        _ => return None,
    })
}

struct RawTensor {
    name: String,
    ne: Vec<u64>,
    ggml_type: u32,
    offset: u64,
}

impl RawTensor {
    fn into_tensor_info(
        self,
        map: &Arc<Mmap>,
        data_offset: usize,
        alignment: usize,
    ) -> ParseResult<TensorInfo> {
        let name = &self.name;
        let dtype = dtype_from_ggml(self.ggml_type).ok_or_else(|| {
            format!(
                "tensor '{name}' has unsupported type {} (ggml type {})",
                ggml_type_name(self.ggml_type),
                self.ggml_type
            )
        })?;
        let shape: Vec<usize> = self
            .ne
            .iter()
            .rev()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("tensor '{name}' has a dimension too large: {:?}", self.ne))?;
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor '{name}' shape {shape:?} overflows"))?;
        let inner = shape.last().copied().unwrap_or(1);
        if inner % dtype.block_len() != 0 {
            return Err(format!(
                "tensor '{name}' of type {dtype} has innermost dimension {inner}, not a multiple of the block length {}",
                dtype.block_len()
            ));
        }
        let nbytes = dtype
            .bytes_for(numel)
            .ok_or_else(|| format!("tensor '{name}' shape {shape:?} overflows"))?;
        let rel = usize::try_from(self.offset)
            .map_err(|_| format!("tensor '{name}' has offset {} out of range", self.offset))?;
        if rel % alignment != 0 {
            return Err(format!(
                "tensor '{name}' has offset {rel} not aligned to {alignment}"
            ));
        }
        let start = data_offset.checked_add(rel);
        let end = start.and_then(|s| s.checked_add(nbytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= map.len() => Ok(TensorInfo {
                name: self.name,
                dtype,
                shape,
                map: Arc::clone(map),
                offset: start,
                nbytes,
            }),
            (Some(start), Some(end)) => Err(format!(
                "truncated: tensor '{name}' needs bytes {start}..{end} but the file has {} bytes",
                map.len()
            )),
            _ => Err(format!(
                "tensor '{name}' offset {rel} + {nbytes} bytes overflows"
            )),
        }
    }
}

struct Parsed {
    version: u32,
    metadata: Metadata,
    raw_tensors: Vec<RawTensor>,
    alignment: usize,
    data_offset: usize,
}

fn parse(buf: &[u8]) -> ParseResult<Parsed> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.array::<4>(&|| "magic".into())?;
    if &magic != MAGIC {
        return Err(format!(
            "not a GGUF file (magic {:?}, expected \"GGUF\")",
            String::from_utf8_lossy(&magic)
        ));
    }
    let version = c.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        1 => return Err("GGUF version 1 is not supported (only versions 2 and 3)".into()),
        v if (2..=3).contains(&v.swap_bytes()) => {
            return Err(format!(
                "big-endian GGUF (version {}) is not supported; convert it to little-endian",
                v.swap_bytes()
            ))
        }
        v => return Err(format!("unsupported GGUF version {v} (only 2 and 3)")),
    }
    // Minimum sizes: a tensor info is name len (8) + n_dims (4) + type (4) + offset (8);
    // a key/value is key len (8) + type (4) + at least one byte of value.
    let tensor_count = c.count(24, &|| "tensor count".into())?;
    let kv_count = c.count(13, &|| "metadata key/value count".into())?;

    let mut metadata = Metadata::new();
    for i in 0..kv_count {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let ty = c.u32(&|| format!("type of metadata key '{key}'"))?;
        let value = c.value(ty, 0, &|| format!("metadata value '{key}'"))?;
        if metadata.contains_key(&key) {
            return Err(format!("duplicate metadata key '{key}'"));
        }
        metadata.insert(key, value);
    }

    let mut raw_tensors = Vec::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let name = c.string(&|| format!("name of tensor #{i}"))?;
        let n_dims = c.u32(&|| format!("n_dims of tensor '{name}'"))? as usize;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS} supported)"
            ));
        }
        let mut ne = Vec::with_capacity(n_dims);
        for d in 0..n_dims {
            ne.push(c.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
        }
        let ggml_type = c.u32(&|| format!("type of tensor '{name}'"))?;
        let offset = c.u64(&|| format!("offset of tensor '{name}'"))?;
        raw_tensors.push(RawTensor {
            name,
            ne,
            ggml_type,
            offset,
        });
    }

    let alignment = match metadata.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_i128().and_then(|a| usize::try_from(a).ok()) {
            Some(a) if a.is_power_of_two() => a,
            _ => {
                return Err(format!(
                    "{ALIGNMENT_KEY} = {v:?} is not a nonzero power of two"
                ))
            }
        },
    };
    let data_offset = c
        .pos
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| "data offset overflows".to_string())?;
    Ok(Parsed {
        version,
        metadata,
        raw_tensors,
        alignment,
        data_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_names_match_dtypes() {
        for id in 0..64 {
            if let Some(dtype) = dtype_from_ggml(id) {
                assert_eq!(ggml_type_name(id), dtype.name(), "ggml type {id}");
            }
        }
        assert_eq!(ggml_type_name(12), "q4_k");
        assert_eq!(ggml_type_name(1000), "unknown");
    }

    #[test]
    fn cursor_reports_truncation() {
        let mut c = Cursor {
            buf: &[1, 0, 0],
            pos: 0,
        };
        let err = c.u32(&|| "version".into()).unwrap_err();
        assert!(
            err.starts_with("truncated header (reading version"),
            "{err}"
        );
        assert_eq!(c.pos, 0);
    }
}
