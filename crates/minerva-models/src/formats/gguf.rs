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
