//! Streams tensors into safetensors shards the way mlx-lm's `save_model` lays them out
//! (`model.safetensors`, or `model-0000i-of-0000n.safetensors` past 5 GiB each, metadata
//! `{"format": "mlx"}`, and `model.safetensors.index.json`).
//!
//! The safetensors crate writes the header (so it is valid by construction), but the data is
//! written here, group by group in our order: the crate's `serialize_to_file` sorts tensors
//! by dtype, which would separate a module's codes (u32) from its scales (bf16) and force
//! either quantizing twice or holding every module's scales until the end. Here each group (a
//! module's weight, scales and biases) is produced once, written, and dropped, so memory
//! stays at one tensor however large the checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use minerva_core::DType;
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use serde_json::{json, Value};

use crate::error::{ModelError, Result};
use crate::formats::FormatError;

/// mlx-lm's `MAX_FILE_SIZE_GB` (5), as it applies it: `5 << 30` bytes.
pub const MAX_SHARD_BYTES: usize = 5 << 30;

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct OutTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl OutTensor {
    pub fn nbytes(&self) -> usize {
        let numel: usize = self.shape.iter().product();
        numel * self.dtype.block_bytes()
    }
}

/// Tensors produced together (one source tensor's outputs).
pub struct Group {
    pub tensors: Vec<OutTensor>,
}

impl Group {
    fn nbytes(&self) -> usize {
        self.tensors.iter().map(OutTensor::nbytes).sum()
    }
}

fn st_dtype(dtype: DType) -> Option<Dtype> {
    Some(match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::U32 => Dtype::U32,
        DType::U8 => Dtype::U8,
        _ => return None,
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| {
        FormatError::Io {
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}

/// Splits groups into shards of at most `max_bytes` (a larger group gets a shard of its own),
/// as mlx-lm's `make_shards` does by tensor.
pub fn shard(groups: &[Group], max_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut shards = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, g) in groups.iter().enumerate() {
        if i > start && size + g.nbytes() > max_bytes {
            shards.push(start..i);
            (start, size) = (i, 0);
        }
        size += g.nbytes();
    }
    if start < groups.len() {
        shards.push(start..groups.len());
    }
    shards
}

/// Writes `groups` into `dir` as one or more shards plus the index; `produce(i)` returns
/// group `i`'s tensor bytes in order. `parameters` is the index's `total_parameters`.
pub fn write_checkpoint(
    dir: &Path,
    groups: &[Group],
    max_shard_bytes: usize,
    parameters: usize,
    mut produce: impl FnMut(usize) -> Result<Vec<Vec<u8>>>,
) -> Result<()> {
    let shards = shard(groups, max_shard_bytes);
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (s, range) in shards.iter().enumerate() {
        let file = match n {
            1 => "model.safetensors".to_string(),
            _ => format!("model-{:05}-of-{n:05}.safetensors", s + 1),
        };
        let path = dir.join(&file);
        write_shard(&path, &groups[range.clone()], |i| produce(range.start + i))?;
        for g in &groups[range.clone()] {
            for t in &g.tensors {
                weight_map.insert(t.name.clone(), Value::String(file.clone()));
            }
        }
    }
    let total: usize = groups.iter().map(Group::nbytes).sum();
    let index = json!({
        "metadata": {"total_size": total, "total_parameters": parameters},
        "weight_map": weight_map,
    });
    write_json(&dir.join("model.safetensors.index.json"), &index)
}

fn write_shard(
    path: &Path,
    groups: &[Group],
    mut produce: impl FnMut(usize) -> Result<Vec<Vec<u8>>>,
) -> Result<()> {
    let invalid = |message: String| ModelError::from(FormatError::invalid(path, message));
    let mut infos = Vec::new();
    let mut offset = 0;
    for t in groups.iter().flat_map(|g| &g.tensors) {
        let dtype = st_dtype(t.dtype)
            .ok_or_else(|| invalid(format!("tensor '{}': cannot store {}", t.name, t.dtype)))?;
        let end = offset + t.nbytes();
        infos.push((
            t.name.clone(),
            TensorInfo {
                dtype,
                shape: t.shape.clone(),
                data_offsets: (offset, end),
            },
        ));
        offset = end;
    }
    let meta = HashMap::from([("format".to_string(), "mlx".to_string())]);
    let metadata = Metadata::new(Some(meta), infos)
        .map_err(|e| invalid(format!("safetensors header: {e}")))?;
    let mut header = serde_json::to_string(&metadata)
        .map_err(|e| invalid(format!("safetensors header: {e}")))?
        .into_bytes();
    // The data starts 8-byte aligned, as the format asks.
    header.resize(header.len().next_multiple_of(8), b' ');

    let file = std::fs::File::create(path).map_err(io(path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|()| out.write_all(&header))
        .map_err(io(path))?;
    for (i, g) in groups.iter().enumerate() {
        let data = produce(i)?;
        if data.len() != g.tensors.len() {
            return Err(invalid(format!(
                "internal: {} tensors produced for {}",
                data.len(),
                g.tensors.len()
            )));
        }
        for (t, bytes) in g.tensors.iter().zip(&data) {
            if bytes.len() != t.nbytes() {
                return Err(invalid(format!(
                    "internal: tensor '{}' produced {} bytes, expected {}",
                    t.name,
                    bytes.len(),
                    t.nbytes()
                )));
            }
            out.write_all(bytes).map_err(io(path))?;
        }
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// JSON as Python's `json.dump(..., indent=4)` lays it out (mlx-lm's config and index).
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut text, formatter);
    serde::Serialize::serialize(value, &mut ser)
        .map_err(|e| FormatError::invalid(path, format!("JSON: {e}")))?;
    std::fs::write(path, text).map_err(io(path))
}

/// The temporary sibling of `out` that a conversion is written into before it is renamed.
pub fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(bytes: usize) -> Group {
        Group {
            tensors: vec![OutTensor {
                name: "t".into(),
                dtype: DType::U8,
                shape: vec![bytes],
            }],
        }
    }

    #[test]
    fn shards_like_mlx_lm() {
        let groups: Vec<Group> = [4, 4, 3, 10, 1].into_iter().map(group).collect();
        assert_eq!(shard(&groups, 8), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(shard(&groups, 100), vec![0..5]);
        assert!(shard(&[], 8).is_empty());
    }
}
