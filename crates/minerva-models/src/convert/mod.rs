//! `minerva convert`: an HF safetensors checkpoint (f32/f16/bf16) into an MLX checkpoint as
//! `mlx_lm.convert` writes it — quantized weights as `.weight` (packed u32 codes) +
//! `.scales` (+ `.biases`) bit-identical to `mx.quantize`, config.json with mlx-lm's
//! `"quantization"` block — that mlx-lm and Minerva load.
//!
//! Steps, in mlx-lm's order: rename/reshape into MLX's layout ([`layout`]), cast floats to
//! the target dtype, quantize the modules the [`rules`] pick (from the cast values, so
//! affine scales and biases come out in that dtype), write shards ([`writer`]) into a staging
//! directory that is renamed to the output only when everything succeeded.

pub mod layout;
pub mod rules;
pub mod writer;

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use minerva_core::{ops, Array, DType};
use serde_json::Value;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::formats::safetensors::SafetensorsModel;
use crate::formats::FormatError;
use crate::loader::ModelFiles;
use layout::Item;
pub use rules::{QuantPlan, QuantSpec, Rule};
use writer::{Group, OutTensor};

/// Files copied beside the weights (tokenizer, generation defaults, remote code), as
/// `mlx_lm.convert` keeps them.
const COPIED: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

/// What to convert and how.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub src: PathBuf,
    pub out: PathBuf,
    /// `None`: the architecture's default (gpt-oss: MXFP4-Q8; others: no quantization).
    pub plan: Option<QuantPlan>,
    /// Float dtype of the output (F32, F16 or BF16). `None`: like mlx_lm.convert, the
    /// config's `torch_dtype` (or `text_config.dtype`) when it names one of those, else each
    /// tensor keeps its stored dtype.
    pub dtype: Option<DType>,
    /// Shard size limit in bytes (mlx-lm: 5 GiB).
    pub max_shard_bytes: usize,
}

impl ConvertOptions {
    pub fn new(src: &Path, out: &Path) -> ConvertOptions {
        ConvertOptions {
            src: src.to_path_buf(),
            out: out.to_path_buf(),
            plan: None,
            dtype: None,
            max_shard_bytes: writer::MAX_SHARD_BYTES,
        }
    }
}

/// What a conversion wrote.
#[derive(Clone, Debug, Default)]
pub struct ConvertSummary {
    pub tensors: usize,
    pub quantized_modules: usize,
    pub bytes: usize,
    pub parameters: usize,
}

/// One source tensor's outputs: float in `dtype`, or quantized by `spec` from `dtype` values.
struct Planned {
    item: Item,
    dtype: DType,
    spec: Option<QuantSpec>,
}

/// Converts `options.src` into `options.out` (which must not exist yet).
pub fn convert(options: &ConvertOptions) -> Result<ConvertSummary> {
    let out = &options.out;
    if out.exists() {
        return Err(
            FormatError::invalid(out, "already exists; convert writes a new directory").into(),
        );
    }
    let ModelFiles::Safetensors { weights, dir } = ModelFiles::locate(&options.src)? else {
        return Err(FormatError::invalid(
            &options.src,
            "convert reads safetensors checkpoints (a model directory with config.json)",
        )
        .into());
    };
    let config_path = dir.join("config.json");
    // Only architectures Minerva knows, so the layout rules are known to hold.
    let arch = ModelConfig::from_hf_json(&config_path)?;
    let mut config = read_json(&config_path)?;
    let model = SafetensorsModel::open(&weights)?;
    let src_file = model
        .files()
        .first()
        .map_or(weights.clone(), |(p, _)| p.clone());
    let tensor_error = |(name, message): (String, String)| ModelError::Tensor {
        path: src_file.clone(),
        name,
        message,
    };
    let model_type = match arch {
        ModelConfig::GptOss(_) => "gpt_oss",
        ModelConfig::Llama(_) => "llama",
    };
    let items = layout::items(model_type, model.tensors()).map_err(tensor_error)?;
    let plan = match (&options.plan, &arch) {
        (Some(plan), _) => plan.clone(),
        (None, ModelConfig::GptOss(_)) => QuantPlan::gpt_oss_mxfp4_q8(),
        (None, _) => QuantPlan::none(),
    };
    let plan = with_arch_rules(plan, &arch);
    let target = options.dtype.or_else(|| config_dtype(&config));

    let mut planned = Vec::with_capacity(items.len());
    for item in items {
        let dtype = match item.source.dtype {
            DType::F32 | DType::F16 | DType::BF16 => target.unwrap_or(item.source.dtype),
            other => other,
        };
        let spec = match item.name.strip_suffix(".weight") {
            Some(path) if is_float(dtype) => plan.choose(path, &item.shape),
            _ => None,
        };
        planned.push(Planned { item, dtype, spec });
    }
    planned.sort_by(|a, b| a.item.name.cmp(&b.item.name));
    let groups: Vec<Group> = planned.iter().map(outputs).collect();
    let parameters = planned
        .iter()
        .map(|p| p.item.shape.iter().product::<usize>())
        .sum();

    let quantized: Vec<(&str, QuantSpec)> = planned
        .iter()
        .filter_map(|p| Some((p.item.name.strip_suffix(".weight")?, p.spec?)))
        .collect();
    if let Some(obj) = config.as_object_mut() {
        // As mlx-lm's load_config / save_config: generation_config's eos ids win, and the
        // fields that only describe the source go.
        if let Some(eos) = read_optional_json(&dir.join("generation_config.json"))?
            .and_then(|g| g.get("eos_token_id").cloned())
            .filter(|e| !e.is_null() && e != &Value::Bool(false))
        {
            obj.insert("eos_token_id".into(), eos);
        }
        obj.remove("_name_or_path");
        obj.remove("vision_config");
        if let Some(block) = plan.config_block(quantized.iter().copied()) {
            obj.insert("quantization".into(), block.clone());
            obj.insert("quantization_config".into(), block);
        }
    }

    let staging = writer::staging_dir(out);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|source| FormatError::Io {
        path: staging.clone(),
        source,
    })?;
    let written = (|| {
        writer::write_checkpoint(
            &staging,
            &groups,
            options.max_shard_bytes,
            parameters,
            |i| {
                produce(&planned[i]).map_err(|e| ModelError::Tensor {
                    path: file_of(&model, &planned[i].item.source),
                    name: planned[i].item.source.name.clone(),
                    message: e.to_string(),
                })
            },
        )?;
        writer::write_json(&staging.join("config.json"), &config)?;
        for name in COPIED {
            let from = dir.join(name);
            if from.is_file() {
                std::fs::copy(&from, staging.join(name)).map_err(|source| FormatError::Io {
                    path: from.clone(),
                    source,
                })?;
            }
        }
        copy_python_files(&dir, &staging)?;
        std::fs::rename(&staging, out).map_err(|source| FormatError::Io {
            path: out.clone(),
            source,
        })?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    Ok(ConvertSummary {
        tensors: groups.iter().map(|g| g.tensors.len()).sum(),
        quantized_modules: quantized.len(),
        bytes: groups
            .iter()
            .flat_map(|g| &g.tensors)
            .map(OutTensor::nbytes)
            .sum(),
        parameters,
    })
}

/// The file of `model` that holds `tensor`, for error messages.
fn file_of(model: &SafetensorsModel, tensor: &crate::formats::TensorInfo) -> PathBuf {
    let files = model.files();
    files
        .iter()
        .find(|(_, map)| std::sync::Arc::ptr_eq(map, &tensor.map))
        .or(files.first())
        .map_or_else(PathBuf::new, |(p, _)| p.clone())
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Rules every conversion of an architecture follows when it quantizes at all, after the
/// user's: mlx-lm's gpt-oss `Model.quant_predicate` keeps the router at 8-bit, group 64,
/// and config.json records exactly what it returns.
fn with_arch_rules(mut plan: QuantPlan, arch: &ModelConfig) -> QuantPlan {
    if plan.global.is_some() && matches!(arch, ModelConfig::GptOss(_)) {
        let q8 = QuantSpec::Affine { bits: 8, group: 64 };
        let entry = serde_json::json!({"group_size": 64, "bits": 8});
        plan.rules
            .push(Rule::new("mlp.router", Some(q8)).with_entry(entry));
    }
    plan
}

/// mlx_lm.convert's default dtype: `torch_dtype`, else `text_config.dtype`, when it is one of
/// float16, bfloat16, float32.
fn config_dtype(config: &Value) -> Option<DType> {
    let name = config
        .get("torch_dtype")
        .filter(|v| !v.is_null())
        .or_else(|| config.get("text_config")?.get("dtype"))?
        .as_str()?;
    match name {
        "float32" => Some(DType::F32),
        "float16" => Some(DType::F16),
        "bfloat16" => Some(DType::BF16),
        _ => None,
    }
}

/// The tensors a planned item becomes: `NAME` in its dtype, or `PATH.weight` (u32 codes),
/// `PATH.scales` and, for affine, `PATH.biases`.
fn outputs(p: &Planned) -> Group {
    let tensor = |name: String, dtype, shape| OutTensor { name, dtype, shape };
    let Some(spec) = p.spec else {
        return Group {
            tensors: vec![tensor(p.item.name.clone(), p.dtype, p.item.shape.clone())],
        };
    };
    let path = p.item.name.strip_suffix(".weight").unwrap_or(&p.item.name);
    let (outer, k) = p.item.shape.split_at(p.item.shape.len() - 1);
    let with_last = |last: usize| [outer, &[last]].concat();
    let mut tensors = vec![tensor(
        p.item.name.clone(),
        DType::U32,
        with_last(k[0] * spec.bits() as usize / 32),
    )];
    let groups = with_last(k[0] / spec.group());
    match spec {
        QuantSpec::Mxfp4 => tensors.push(tensor(format!("{path}.scales"), DType::U8, groups)),
        QuantSpec::Affine { .. } => {
            tensors.push(tensor(format!("{path}.scales"), p.dtype, groups.clone()));
            tensors.push(tensor(format!("{path}.biases"), p.dtype, groups));
        }
    }
    Group { tensors }
}

/// The bytes of a planned item's output tensors, in [`outputs`]' order.
fn produce(p: &Planned) -> minerva_core::Result<Vec<Vec<u8>>> {
    let bytes = p.item.bytes();
    let values = cast(&bytes, p.item.source.dtype, p.dtype);
    let Some(spec) = p.spec else {
        return Ok(vec![values.into_owned()]);
    };
    let mut w = Array::zeros(p.dtype, &p.item.shape)?;
    w.host_bytes_mut()?.copy_from_slice(&values);
    drop(values);
    let q = ops::quantize(&w, spec.dtype())?;
    let Some(params) = q.quant() else {
        return Err(minerva_core::Error::Unsupported(format!(
            "{} without scales",
            q.dtype()
        )));
    };
    let mut out = vec![
        q.host_bytes()?.to_vec(),
        params.scales.host_bytes()?.to_vec(),
    ];
    if let Some(b) = &params.biases {
        out.push(b.host_bytes()?.to_vec());
    }
    Ok(out)
}

/// Float bytes from one dtype to another (round to nearest even when narrowing, as mlx's
/// `astype`); other dtypes pass through.
fn cast(bytes: &[u8], from: DType, to: DType) -> std::borrow::Cow<'_, [u8]> {
    if from == to || !is_float(from) || !is_float(to) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let size = from.block_bytes();
    let mut out = Vec::with_capacity(bytes.len() / size * to.block_bytes());
    for b in bytes.chunks_exact(size) {
        let x = match from {
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DType::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        };
        match to {
            DType::F32 => out.extend_from_slice(&x.to_le_bytes()),
            DType::F16 => out.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
            _ => out.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn read_json(path: &Path) -> Result<Value> {
    read_optional_json(path)?.ok_or_else(|| ModelError::config(path, "missing"))
}

fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| ModelError::config(path, e.to_string()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::config(path, format!("invalid JSON: {e}")))
}

/// mlx_lm.convert copies `*.py` (remote code) too.
fn copy_python_files(src: &Path, dst: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::from(FormatError::Io { path, source })
    };
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let path = entry.map_err(io(src))?.path();
        if path.extension().is_some_and(|e| e == "py") && path.is_file() {
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, dst.join(name)).map_err(io(&path))?;
            }
        }
    }
    Ok(())
}
