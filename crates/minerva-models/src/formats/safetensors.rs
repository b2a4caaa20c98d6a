//! Safetensors reader: one file or a sharded `model.safetensors.index.json`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use minerva_core::DType;
use safetensors::tensor::{Dtype, SafeTensorError};
use safetensors::SafeTensors;
use serde::Deserialize;

use super::mlx_quantization::QuantizationConfig;
use super::{map_file, FormatError, TensorInfo};

const INDEX_NAME: &str = "model.safetensors.index.json";
const SINGLE_NAME: &str = "model.safetensors";

/// The tensors of a safetensors checkpoint (one file or several shards), sorted by name.
#[derive(Debug)]
pub struct SafetensorsModel {
    files: Vec<(PathBuf, Arc<Mmap>)>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
    /// The MLX `quantization` block of the checkpoint's config.json, when it has one.
    quantization: Option<QuantizationConfig>,
}

#[derive(Deserialize)]
struct IndexJson {
    weight_map: BTreeMap<String, String>,
}

/// One mapped, header-validated safetensors file.
struct Shard {
    path: PathBuf,
    map: Arc<Mmap>,
    tensors: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsModel {
    /// `path` may be a `.safetensors` file, a `model.safetensors.index.json`, or a directory
    /// holding either `model.safetensors.index.json` (preferred) or `model.safetensors` (or,
    /// failing both, all `*.safetensors` files in it, sorted).
    pub fn open(path: &Path) -> Result<SafetensorsModel, FormatError> {
        let io = |source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            let index = path.join(INDEX_NAME);
            if index.is_file() {
                return Self::open_index(&index);
            }
            let single = path.join(SINGLE_NAME);
            if single.is_file() {
                return Self::from_shards(vec![read_shard(&single)?]);
            }
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(io)? {
                let p = entry.map_err(io)?.path();
                if p.extension().is_some_and(|e| e == "safetensors") && p.is_file() {
                    files.push(p);
                }
            }
            if files.is_empty() {
                return Err(FormatError::invalid(
                    path,
                    format!("directory holds neither {INDEX_NAME} nor any .safetensors file"),
                ));
            }
            files.sort();
            let shards = files
                .iter()
                .map(|p| read_shard(p))
                .collect::<Result<Vec<_>, _>>()?;
            Self::from_shards(shards)
        } else if path.extension().is_some_and(|e| e == "json") {
            Self::open_index(path)
        } else {
            Self::from_shards(vec![read_shard(path)?])
        }
    }

    fn open_index(index_path: &Path) -> Result<SafetensorsModel, FormatError> {
        let text = std::fs::read_to_string(index_path).map_err(|source| FormatError::Io {
            path: index_path.to_path_buf(),
            source,
        })?;
        let index: IndexJson = serde_json::from_str(&text)
            .map_err(|e| FormatError::invalid(index_path, format!("invalid index JSON: {e}")))?;
        let dir = index_path.parent().unwrap_or(Path::new(""));
        let shard_names: BTreeSet<&str> = index.weight_map.values().map(String::as_str).collect();
        if shard_names.is_empty() {
            return Err(FormatError::invalid(index_path, "weight_map is empty"));
        }
        let mut shards = Vec::with_capacity(shard_names.len());
        let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(shard_names.len());
        for &name in &shard_names {
            let shard_path = dir.join(name);
            if !shard_path.is_file() {
                return Err(FormatError::invalid(
                    index_path,
                    format!(
                        "shard '{name}' in the weight map is missing ({} is not a file)",
                        shard_path.display()
                    ),
                ));
            }
            by_name.insert(name, shards.len());
            shards.push(read_shard(&shard_path)?);
        }
        // Every mapped tensor must live in its shard; a mapped tensor found in another shard
        // too is taken from the shard the map names.
        let held: Vec<HashSet<&str>> = shards
            .iter()
            .map(|s| s.tensors.iter().map(|t| t.name.as_str()).collect())
            .collect();
        let mut wanted: HashMap<String, usize> = HashMap::with_capacity(index.weight_map.len());
        for (tensor, shard) in &index.weight_map {
            let s = by_name[shard.as_str()];
            if !held[s].contains(tensor.as_str()) {
                return Err(FormatError::invalid(
                    index_path,
                    format!(
                        "tensor '{tensor}' is mapped to '{shard}' but that file does not hold it"
                    ),
                ));
            }
            wanted.insert(tensor.clone(), s);
        }
        for (s, shard) in shards.iter_mut().enumerate() {
            shard
                .tensors
                .retain(|t| wanted.get(t.name.as_str()).is_none_or(|&w| w == s));
        }
        Self::from_shards(shards)
    }

    /// Merges shards (in order), rejecting a tensor name held by two of them.
    fn from_shards(shards: Vec<Shard>) -> Result<SafetensorsModel, FormatError> {
        let metadata = shards
            .first()
            .map(|s| s.metadata.clone())
            .unwrap_or_default();
        let mut files: Vec<(PathBuf, Arc<Mmap>)> = Vec::with_capacity(shards.len());
        let mut all: BTreeMap<String, (TensorInfo, usize)> = BTreeMap::new();
        for (i, shard) in shards.into_iter().enumerate() {
            for t in shard.tensors {
                if let Some(&(_, j)) = all.get(&t.name) {
                    // Names within one file are unique, so `j` is an earlier file.
                    let other: &PathBuf = &files[j].0;
                    return Err(FormatError::invalid(
                        &shard.path,
                        format!(
                            "tensor '{}' is also in {}; a tensor may appear in one file only",
                            t.name,
                            other.display()
                        ),
                    ));
                }
                all.insert(t.name.clone(), (t, i));
            }
            files.push((shard.path, shard.map));
        }
        let tensors: Vec<TensorInfo> = all.into_values().map(|(t, _)| t).collect();
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(SafetensorsModel {
            files,
            tensors,
            index,
            metadata,
            quantization: None,
        })
    }

    /// Attaches the MLX `quantization` block read from the checkpoint's config.json; quantized
    /// weights are then checked against it as they load.
    pub fn with_quantization(mut self, quantization: Option<QuantizationConfig>) -> Self {
        self.quantization = quantization;
        self
    }

    pub fn quantization(&self) -> Option<&QuantizationConfig> {
        self.quantization.as_ref()
    }

    /// All tensors, sorted by name.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The `__metadata__` string map of the first file (MLX puts `"format": "mlx"` there).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The files that were opened, with their mappings, in the order they were read.
    pub fn files(&self) -> &[(PathBuf, Arc<Mmap>)] {
        &self.files
    }
}

/// The [`DType`] for a safetensors dtype, if Minerva supports it.
pub fn dtype_from_safetensors(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        _ => return None,
    })
}

fn read_shard(path: &Path) -> Result<Shard, FormatError> {
    let map = map_file(path)?;
    let invalid = |message: String| FormatError::invalid(path, message);
    let (header_len, meta) =
        SafeTensors::read_metadata(&map).map_err(|e| invalid(describe_error(&map, &e)))?;
    let data_start = 8 + header_len;
    let mut tensors = Vec::new();
    for name in meta.offset_keys() {
        let Some(info) = meta.info(&name) else {
            continue;
        };
        let dtype = dtype_from_safetensors(info.dtype).ok_or_else(|| {
            invalid(format!(
                "tensor '{name}' has unsupported dtype {:?}",
                info.dtype
            ))
        })?;
        let (start, end) = info.data_offsets;
        let nbytes = end - start;
        let numel = info
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if numel.and_then(|n| dtype.bytes_for(n)) != Some(nbytes) {
            return Err(invalid(format!(
                "tensor '{name}' of dtype {dtype} and shape {:?} has {nbytes} bytes",
                info.shape
            )));
        }
        let offset = data_start
            .checked_add(start)
            .filter(|&o| o.checked_add(nbytes).is_some_and(|e| e <= map.len()))
            .ok_or_else(|| invalid(format!("tensor '{name}' lies outside the file")))?;
        tensors.push(TensorInfo {
            name,
            dtype,
            shape: info.shape.clone(),
            map: Arc::clone(&map),
            offset,
            nbytes,
        });
    }
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Shard {
        path: path.to_path_buf(),
        map,
        tensors,
        metadata,
    })
}

/// A one-line description of a header error; a short file is reported as `truncated`.
fn describe_error(buf: &[u8], err: &SafeTensorError) -> String {
    let len = buf.len();
    match err {
        SafeTensorError::HeaderTooSmall => {
            format!("truncated: {len} bytes is too short for a safetensors header")
        }
        SafeTensorError::InvalidHeaderLength => {
            let n = buf
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                .unwrap_or(0);
            format!("truncated header: it claims {n} bytes but the file has {len} bytes")
        }
        SafeTensorError::MetadataIncompleteBuffer => match expected_len(buf) {
            Some(expected) if expected > len => format!(
                "truncated: the header describes {expected} bytes but the file has {len} bytes"
            ),
            Some(expected) => format!(
                "the header describes {expected} bytes but the file has {len} bytes ({} extra)",
                len - expected
            ),
            None => format!("invalid safetensors header: {err}"),
        },
        other => format!(
            "invalid safetensors header: {}",
            one_line(&other.to_string())
        ),
    }
}

/// The file size a (parseable) header implies: 8 + header length + end of the last tensor.
fn expected_len(buf: &[u8]) -> Option<usize> {
    let n = usize::try_from(u64::from_le_bytes(buf.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(buf.get(8..8usize.checked_add(n)?)?).ok()?;
    let end = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    8usize
        .checked_add(n)?
        .checked_add(usize::try_from(end).ok()?)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
