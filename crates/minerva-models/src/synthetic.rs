//! Synthetic checkpoints for load, memory and speed tests at true scale: the exact layout of a
//! published gpt-oss checkpoint (tensor names, dtypes, shapes, order, shard files, index,
//! `config.json`) filled with random values that are valid for their format, so a forward
//! pass stays finite. Speed does not depend on the values; correctness is the tiny reference
//! fixtures' job.
//!
//! Two layouts of gpt-oss-20b:
//! - [`Layout::OpenAi`]: `openai/gpt-oss-20b` as published on the hub (transformers names,
//!   MXFP4 experts as `*_blocks` u8 `[E, out, in/32, 16]` + `*_scales` u8 `[E, out, in/32]`,
//!   bf16 elsewhere): 459 tensors in `model-0000{0,1,2}-of-00002.safetensors`, 13761264768
//!   bytes, split where the published index splits.
//! - [`Layout::Mlx`]: what `mlx_lm.convert -q --q-bits 8 --q-group-size 64` writes from it
//!   (mlx-community's "MXFP4-Q8"): experts mxfp4 `{gate,up,down}_proj.{weight,scales,bias}`,
//!   every other linear and the embedding 8-bit affine `.{weight,scales,biases}`; 775 tensors
//!   in mlx-lm's order and 5 GiB shards. `tests/fixtures/gpt-oss-20b-mlx-layout.json` (made by
//!   running mlx-lm itself, `scripts/fixtures/make_gpt_oss_20b_mlx_layout.py`) checks it.
//!
//! No tokenizer is written: the real one (o200k_harmony) is not available offline and a fake
//! one would mislead; token ids drive the benchmarks.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rayon::prelude::*;
use safetensors::Dtype;
use serde_json::{json, Value};

use crate::formats::FormatError;

/// The gpt-oss hyper-parameters that shape its tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptOssDims {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub experts: usize,
    pub experts_per_token: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub sliding_window: usize,
}

impl GptOssDims {
    /// gpt-oss-20b as published.
    pub const GPT_OSS_20B: GptOssDims = GptOssDims {
        hidden: 2880,
        layers: 24,
        heads: 64,
        kv_heads: 8,
        head_dim: 64,
        experts: 32,
        experts_per_token: 4,
        intermediate: 2880,
        vocab: 201088,
        sliding_window: 128,
    };

    /// A gpt-oss small enough to write with random values in a test (2 layers, hidden 128,
    /// 4 experts, vocab 256); every quantized axis still divides into whole groups.
    pub const TINY: GptOssDims = GptOssDims {
        hidden: 128,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 32,
        experts: 4,
        experts_per_token: 2,
        intermediate: 64,
        vocab: 256,
        sliding_window: 8,
    };

    /// Whether every quantized axis divides into whole groups (32 for mxfp4, 64 for the
    /// 8-bit affine layers) and the heads group evenly.
    pub fn check(&self) -> Result<(), String> {
        let q = self.heads * self.head_dim;
        let ok = [self.hidden, q, self.intermediate]
            .iter()
            .all(|d| *d > 0 && d % 64 == 0)
            && [self.layers, self.kv_heads, self.experts, self.vocab]
                .iter()
                .all(|d| *d > 0)
            && self.heads.is_multiple_of(self.kv_heads)
            && (1..=self.experts).contains(&self.experts_per_token);
        match ok {
            true => Ok(()),
            false => Err(format!(
                "unusable gpt-oss dimensions {self:?}: hidden, heads x head_dim and intermediate \
                 must be multiples of 64, heads a multiple of kv_heads"
            )),
        }
    }
}

/// Which published arrangement of the weights to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    OpenAi,
    Mlx,
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "openai" => Ok(Layout::OpenAi),
            "mlx" => Ok(Layout::Mlx),
            _ => Err(format!("unknown layout '{s}' (openai or mlx)")),
        }
    }
}

/// How tensor bytes are filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Random values valid for each tensor's format, reproducible from the seed.
    Random { seed: u64 },
    /// All zeros, written as a sparse file (no disk blocks, instant): for tests that need
    /// the true file sizes and headers but not the values.
    Zeros,
}

/// What a tensor holds, which decides how its random bytes are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// bf16 weights, uniform with standard deviation 0.02.
    Weight,
    /// bf16 norm gains near 1.
    Norm,
    /// bf16 biases and attention sinks, small.
    Bias,
    /// Packed codes where every bit pattern is valid: e2m1 pairs or 8-bit affine codes.
    Codes,
    /// MXFP4 e8m0 scales 2^(s-127) with s in 118..=121, so e2m1 codes (|x| ≤ 6) give
    /// weights of a few hundredths, like a trained model.
    E8m0,
    /// bf16 scales of 8-bit affine groups (`w = scale * q + bias`, q in 0..=255).
    AffineScale,
    /// bf16 biases of 8-bit affine groups, about -128 x scale so weights centre on 0.
    AffineBias,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub values: Values,
}

impl TensorSpec {
    fn new(name: String, dtype: Dtype, shape: &[usize], values: Values) -> Self {
        TensorSpec {
            name,
            dtype,
            shape: shape.to_vec(),
            values,
        }
    }

    pub fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bitsize() / 8
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    pub file: String,
    pub tensors: Vec<TensorSpec>,
}

/// Everything a checkpoint directory holds, before any byte is written.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointSpec {
    pub shards: Vec<ShardSpec>,
    /// `__metadata__` of every shard (`{"format": "pt"}` or `{"format": "mlx"}`).
    pub format: &'static str,
    /// `model.safetensors.index.json`, when the layout writes one.
    pub index: Option<Value>,
    pub config: Value,
    pub generation_config: Value,
}

impl CheckpointSpec {
    pub fn tensors(&self) -> impl Iterator<Item = &TensorSpec> {
        self.shards.iter().flat_map(|s| s.tensors.iter())
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors().map(|t| t.nbytes() as u64).sum()
    }
}

/// The gpt-oss checkpoint of `dims` in `layout`.
pub fn gpt_oss(layout: Layout, dims: &GptOssDims) -> Result<CheckpointSpec, String> {
    dims.check()?;
    let hub = hub_config(dims);
    Ok(match layout {
        Layout::OpenAi => {
            // The published index splits where adding the next tensor would pass 4.8e9
            // bytes (found by summing its tensors; "5GB" it is not), 0-based names.
            let groups = split(openai_tensors(dims), 4_800_000_000);
            let n = groups.len();
            let shards = name_shards(groups, |i| format!("model-{i:05}-of-{:05}", n - 1));
            let index =
                (n > 1).then(|| index_json(&shards, json!({"total_size": total_bytes(&shards)})));
            CheckpointSpec {
                shards,
                format: "pt",
                index,
                config: hub,
                generation_config: generation_config(),
            }
        }
        Layout::Mlx => {
            // mlx_lm.utils.make_shards: a new file when the next tensor would pass 5 GiB.
            let groups = split(mlx_tensors(dims), 5 << 30);
            let n = groups.len();
            let shards = name_shards(groups, |i| format!("model-{:05}-of-{n:05}", i + 1));
            let metadata = json!({
                "total_size": total_bytes(&shards),
                "total_parameters": mlx_parameter_count(&shards),
            });
            CheckpointSpec {
                index: Some(index_json(&shards, metadata)),
                shards,
                format: "mlx",
                config: mlx_config(hub, dims),
                generation_config: generation_config(),
            }
        }
    })
}

/// One layer's tensors in the order of the published index, then the embedding, final norm
/// and LM head; layers in the index's (string-sorted) order.
fn openai_tensors(d: &GptOssDims) -> Vec<TensorSpec> {
    use Values::*;
    let (h, e, i) = (d.hidden, d.experts, d.intermediate);
    let (q, kv) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let mut layers: Vec<usize> = (0..d.layers).collect();
    layers.sort_by_key(|l| l.to_string());
    let mut out = Vec::new();
    for l in layers {
        let t = |role: &str, dtype, shape: &[usize], values| {
            TensorSpec::new(format!("model.layers.{l}.{role}"), dtype, shape, values)
        };
        let bf = Dtype::BF16;
        out.extend([
            t("input_layernorm.weight", bf, &[h], Norm),
            t("self_attn.o_proj.bias", bf, &[h], Bias),
            t("self_attn.o_proj.weight", bf, &[h, q], Weight),
            t("self_attn.q_proj.bias", bf, &[q], Bias),
            t("self_attn.k_proj.bias", bf, &[kv], Bias),
            t("self_attn.v_proj.bias", bf, &[kv], Bias),
            t("self_attn.q_proj.weight", bf, &[q, h], Weight),
            t("self_attn.k_proj.weight", bf, &[kv, h], Weight),
            t("self_attn.v_proj.weight", bf, &[kv, h], Weight),
            t("self_attn.sinks", bf, &[d.heads], Bias),
            t("mlp.router.bias", bf, &[e], Bias),
            t("mlp.router.weight", bf, &[e, h], Weight),
            t("mlp.experts.gate_up_proj_bias", bf, &[e, 2 * i], Bias),
            t(
                "mlp.experts.gate_up_proj_blocks",
                Dtype::U8,
                &[e, 2 * i, h / 32, 16],
                Codes,
            ),
            t(
                "mlp.experts.gate_up_proj_scales",
                Dtype::U8,
                &[e, 2 * i, h / 32],
                E8m0,
            ),
            t("mlp.experts.down_proj_bias", bf, &[e, h], Bias),
            t(
                "mlp.experts.down_proj_blocks",
                Dtype::U8,
                &[e, h, i / 32, 16],
                Codes,
            ),
            t(
                "mlp.experts.down_proj_scales",
                Dtype::U8,
                &[e, h, i / 32],
                E8m0,
            ),
            t("post_attention_layernorm.weight", bf, &[h], Norm),
        ]);
    }
    out.extend([
        TensorSpec::new(
            "model.embed_tokens.weight".into(),
            Dtype::BF16,
            &[d.vocab, h],
            Values::Weight,
        ),
        TensorSpec::new("model.norm.weight".into(), Dtype::BF16, &[h], Values::Norm),
        TensorSpec::new(
            "lm_head.weight".into(),
            Dtype::BF16,
            &[d.vocab, h],
            Values::Weight,
        ),
    ]);
    out
}

/// An 8-bit affine (group 64) linear `prefix` of `[out, inp]` as mlx-lm stores it.
fn affine8(out: &mut Vec<TensorSpec>, prefix: &str, rows: usize, inp: usize, bias: bool) {
    let t = |part: &str, dtype, shape: &[usize], values| {
        TensorSpec::new(format!("{prefix}.{part}"), dtype, shape, values)
    };
    out.extend([
        t("weight", Dtype::U32, &[rows, inp / 4], Values::Codes),
        t(
            "scales",
            Dtype::BF16,
            &[rows, inp / 64],
            Values::AffineScale,
        ),
        t("biases", Dtype::BF16, &[rows, inp / 64], Values::AffineBias),
    ]);
    if bias {
        out.push(t("bias", Dtype::BF16, &[rows], Values::Bias));
    }
}

/// mlx-lm's order (`tree_flatten(model.parameters())`): embedding, final norm, each layer in
/// turn, LM head.
fn mlx_tensors(d: &GptOssDims) -> Vec<TensorSpec> {
    let (h, e, i) = (d.hidden, d.experts, d.intermediate);
    let (q, kv) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let mut out = Vec::new();
    affine8(&mut out, "model.embed_tokens", d.vocab, h, false);
    out.push(TensorSpec::new(
        "model.norm.weight".into(),
        Dtype::BF16,
        &[h],
        Values::Norm,
    ));
    for l in 0..d.layers {
        let p = format!("model.layers.{l}");
        out.push(TensorSpec::new(
            format!("{p}.self_attn.sinks"),
            Dtype::BF16,
            &[d.heads],
            Values::Bias,
        ));
        for (proj, rows, inp) in [("q", q, h), ("k", kv, h), ("v", kv, h), ("o", h, q)] {
            affine8(
                &mut out,
                &format!("{p}.self_attn.{proj}_proj"),
                rows,
                inp,
                true,
            );
        }
        for (proj, rows, inp) in [("gate", i, h), ("up", i, h), ("down", h, i)] {
            let t = |part: &str, dtype, shape: &[usize], values| {
                TensorSpec::new(
                    format!("{p}.mlp.experts.{proj}_proj.{part}"),
                    dtype,
                    shape,
                    values,
                )
            };
            out.extend([
                t("weight", Dtype::U32, &[e, rows, inp / 8], Values::Codes),
                t("scales", Dtype::U8, &[e, rows, inp / 32], Values::E8m0),
                t("bias", Dtype::BF16, &[e, rows], Values::Bias),
            ]);
        }
        affine8(&mut out, &format!("{p}.mlp.router"), e, h, true);
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            out.push(TensorSpec::new(
                format!("{p}.{norm}.weight"),
                Dtype::BF16,
                &[h],
                Values::Norm,
            ));
        }
    }
    affine8(&mut out, "lm_head", d.vocab, h, false);
    out
}

/// Greedy sharding in order: a new shard starts when the next tensor would take the current
/// one past `limit` bytes (a tensor larger than `limit` gets a shard of its own).
fn split(tensors: Vec<TensorSpec>, limit: usize) -> Vec<Vec<TensorSpec>> {
    let mut shards: Vec<Vec<TensorSpec>> = Vec::new();
    let mut size = 0;
    for t in tensors {
        let n = t.nbytes();
        match shards.last_mut() {
            Some(shard) if size + n <= limit => shard.push(t),
            _ => {
                shards.push(vec![t]);
                size = 0;
            }
        }
        size += n;
    }
    shards
}

/// `stem(i).safetensors` for each shard, or `model.safetensors` when there is one.
fn name_shards(groups: Vec<Vec<TensorSpec>>, stem: impl Fn(usize) -> String) -> Vec<ShardSpec> {
    let single = groups.len() == 1;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, tensors)| ShardSpec {
            file: match single {
                true => "model.safetensors".into(),
                false => format!("{}.safetensors", stem(i)),
            },
            tensors,
        })
        .collect()
}

fn total_bytes(shards: &[ShardSpec]) -> u64 {
    shards
        .iter()
        .flat_map(|s| &s.tensors)
        .map(|t| t.nbytes() as u64)
        .sum()
}

fn index_json(shards: &[ShardSpec], metadata: Value) -> Value {
    let weight_map: BTreeMap<&str, &str> = shards
        .iter()
        .flat_map(|s| {
            s.tensors
                .iter()
                .map(move |t| (t.name.as_str(), s.file.as_str()))
        })
        .collect();
    json!({"metadata": metadata, "weight_map": weight_map})
}

/// mlx-lm's `get_total_parameters`: the unquantized parameter count of its leaf modules
/// (packed codes count `32 / bits` parameters per u32; scales and affine biases none; the
/// attention sinks sit on a non-leaf module and are not counted).
fn mlx_parameter_count(shards: &[ShardSpec]) -> u64 {
    let tensors: Vec<&TensorSpec> = shards.iter().flat_map(|s| &s.tensors).collect();
    let by_name: BTreeMap<&str, &TensorSpec> =
        tensors.iter().map(|t| (t.name.as_str(), *t)).collect();
    tensors
        .iter()
        .filter(|t| {
            !t.name.ends_with(".scales")
                && !t.name.ends_with(".biases")
                && !t.name.ends_with(".sinks")
        })
        .map(|t| {
            let n = t.shape.iter().product::<usize>() as u64;
            let prefix = t.name.strip_suffix(".weight").unwrap_or("");
            match (t.dtype, by_name.get(format!("{prefix}.scales").as_str())) {
                // mxfp4 scales are u8 (4 bits), affine ones bf16 (8 bits here).
                (Dtype::U32, Some(s)) if s.dtype == Dtype::U8 => n * 8,
                (Dtype::U32, Some(_)) => n * 4,
                _ => n,
            }
        })
        .sum()
}

/// `openai/gpt-oss-20b`'s `config.json` as published, for `d`.
fn hub_config(d: &GptOssDims) -> Value {
    let layer_types: Vec<&str> = (0..d.layers)
        .map(|l| ["sliding_attention", "full_attention"][l % 2])
        .collect();
    json!({
        "architectures": ["GptOssForCausalLM"],
        "attention_bias": true,
        "attention_dropout": 0.0,
        "eos_token_id": 200002,
        "experts_per_token": d.experts_per_token,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "hidden_size": d.hidden,
        "initial_context_length": 4096,
        "initializer_range": 0.02,
        "intermediate_size": d.intermediate,
        "layer_types": layer_types,
        "max_position_embeddings": 131072,
        "model_type": "gpt_oss",
        "num_attention_heads": d.heads,
        "num_experts_per_tok": d.experts_per_token,
        "num_hidden_layers": d.layers,
        "num_key_value_heads": d.kv_heads,
        "num_local_experts": d.experts,
        "output_router_logits": false,
        "pad_token_id": 199999,
        "quantization_config": {
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head"
            ],
            "quant_method": "mxfp4"
        },
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "rope_type": "yarn",
            "truncate": false
        },
        "rope_theta": 150000,
        "router_aux_loss_coef": 0.9,
        "sliding_window": d.sliding_window,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": false,
        "transformers_version": "4.55.0.dev0",
        "use_cache": true,
        "vocab_size": d.vocab
    })
}

/// The hub config as mlx-lm saves it after conversion: its `"quantization"` (mxfp4 by default,
/// one 8-bit entry per affine module; routers without `"mode"`, as `quant_predicate` gives
/// them) replaces the hub's `"quantization_config"`, which becomes a copy of it.
fn mlx_config(mut config: Value, d: &GptOssDims) -> Value {
    let affine = json!({"group_size": 64, "bits": 8, "mode": "affine"});
    let mut q = serde_json::Map::new();
    q.insert("group_size".into(), json!(32));
    q.insert("bits".into(), json!(4));
    q.insert("mode".into(), json!("mxfp4"));
    q.insert("model.embed_tokens".into(), affine.clone());
    for l in 0..d.layers {
        for proj in ["q", "k", "v", "o"] {
            q.insert(
                format!("model.layers.{l}.self_attn.{proj}_proj"),
                affine.clone(),
            );
        }
        q.insert(
            format!("model.layers.{l}.mlp.router"),
            json!({"group_size": 64, "bits": 8}),
        );
    }
    q.insert("lm_head".into(), affine);
    if let Some(c) = config.as_object_mut() {
        c.insert("quantization".into(), Value::Object(q.clone()));
        c.insert("quantization_config".into(), Value::Object(q));
    }
    config
}

/// `generation_config.json` as published (mlx_lm.convert copies it).
fn generation_config() -> Value {
    json!({
        "bos_token_id": 199998,
        "do_sample": true,
        "eos_token_id": [200002, 199999, 200012],
        "pad_token_id": 199999,
        "transformers_version": "4.55.0.dev0"
    })
}

/// Bytes generated per task: small enough to spread over the cores, large enough that a
/// task's setup is nothing.
const CHUNK: usize = 4 << 20;
/// Chunks generated (in parallel) before each write.
const BATCH: usize = 16;

/// Writes `spec` into `dir` (created if needed): the shard files, the index, `config.json`
/// and `generation_config.json`. Tensor data is produced and written a batch at a time, so
/// memory stays at `CHUNK x BATCH` whatever the checkpoint size. `progress` gets the bytes
/// of tensor data written so far.
pub fn write(
    spec: &CheckpointSpec,
    dir: &Path,
    fill: Fill,
    mut progress: impl FnMut(u64),
) -> Result<Vec<PathBuf>, FormatError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FormatError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tables = Tables::new();
    let mut buf = vec![0u8; CHUNK * BATCH];
    let mut written = 0u64;
    let mut files = Vec::new();
    let mut tensor_index = 0u64;
    for shard in &spec.shards {
        let path = dir.join(&shard.file);
        let file = File::create(&path).map_err(io(&path))?;
        let header = header_bytes(shard, spec.format);
        let data_len: u64 = shard.tensors.iter().map(|t| t.nbytes() as u64).sum();
        let mut out = BufWriter::new(file);
        out.write_all(&header).map_err(io(&path))?;
        match fill {
            Fill::Zeros => {
                written += data_len;
                tensor_index += shard.tensors.len() as u64;
            }
            Fill::Random { seed } => {
                for t in &shard.tensors {
                    let seed = mix(seed ^ mix(tensor_index));
                    tensor_index += 1;
                    let n = t.nbytes();
                    let mut done = 0;
                    while done < n {
                        let len = (n - done).min(buf.len());
                        let first_chunk = done / CHUNK;
                        buf[..len]
                            .par_chunks_mut(CHUNK)
                            .enumerate()
                            .for_each(|(c, bytes)| {
                                let mut rng = WyRand(mix(seed ^ (first_chunk + c) as u64));
                                tables.fill(t.values, &mut rng, bytes);
                            });
                        out.write_all(&buf[..len]).map_err(io(&path))?;
                        done += len;
                        written += len as u64;
                        progress(written);
                    }
                }
            }
        }
        let file = out.into_inner().map_err(|e| io(&path)(e.into_error()))?;
        // Zeros: extend to full length without writing (a sparse file).
        file.set_len(header.len() as u64 + data_len)
            .map_err(io(&path))?;
        progress(written);
        files.push(path);
    }
    let mut json_file = |name: &str, value: &Value| -> Result<(), FormatError> {
        let path = dir.join(name);
        std::fs::write(&path, pretty(value)).map_err(io(&path))?;
        files.push(path);
        Ok(())
    };
    if let Some(index) = &spec.index {
        json_file("model.safetensors.index.json", index)?;
    }
    json_file("config.json", &spec.config)?;
    json_file("generation_config.json", &spec.generation_config)?;
    Ok(files)
}

/// JSON with 4-space indents, as mlx-lm and transformers write their files.
fn pretty(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(value, &mut ser).expect("a JSON value always serializes");
    out.push(b'\n');
    out
}

/// The safetensors header: little-endian u64 length, then JSON naming each tensor's dtype,
/// shape and byte range (in file order), padded with spaces to 8 bytes so data is aligned.
fn header_bytes(shard: &ShardSpec, format: &str) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({ "format": format }));
    let mut offset = 0;
    for t in &shard.tensors {
        let end = offset + t.nbytes();
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = serde_json::to_vec(&header).expect("a JSON map always serializes");
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out
}

/// splitmix64's finalizer: decorrelates seeds that differ in a few bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// wyrand: one multiply per 64 random bits; plenty for filler data.
struct WyRand(u64);

impl WyRand {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }
}

/// bf16 bit patterns for each bf16 [`Values`] kind, indexed by 16 random bits: a table
/// lookup per value instead of float math.
struct Tables {
    weight: Vec<u16>,
    norm: Vec<u16>,
    bias: Vec<u16>,
    affine_scale: Vec<u16>,
    affine_bias: Vec<u16>,
}

impl Tables {
    fn new() -> Self {
        // `f` maps u in (0, 1) to a value; uniform distributions are enough here.
        let table = |f: &dyn Fn(f32) -> f32| -> Vec<u16> {
            (0..1u32 << 16)
                .map(|i| half::bf16::from_f32(f((i as f32 + 0.5) / 65536.0)).to_bits())
                .collect()
        };
        // Uniform on ±a has standard deviation a / sqrt(3): a = 0.0346 gives 0.02.
        Tables {
            weight: table(&|u| 0.0346 * (2.0 * u - 1.0)),
            norm: table(&|u| 1.0 + 0.1 * (u - 0.5)),
            bias: table(&|u| 0.02 * (2.0 * u - 1.0)),
            // scale x 255 spans about 0.069: weights within ±0.035.
            affine_scale: table(&|u| 2.4e-4 + 0.6e-4 * u),
            affine_bias: table(&|u| -0.032 - 0.005 * u),
        }
    }

    fn fill(&self, values: Values, rng: &mut WyRand, bytes: &mut [u8]) {
        let table = match values {
            Values::Codes => return fill_bytes(rng, bytes, |b| b),
            // Low two bits pick the exponent offset; 255 (NaN) never appears.
            Values::E8m0 => return fill_bytes(rng, bytes, |b| 118 + (b & 3)),
            Values::Weight => &self.weight,
            Values::Norm => &self.norm,
            Values::Bias => &self.bias,
            Values::AffineScale => &self.affine_scale,
            Values::AffineBias => &self.affine_bias,
        };
        let mut words = bytes.chunks_exact_mut(8);
        for word in &mut words {
            let r = rng.next();
            for (k, pair) in word.chunks_exact_mut(2).enumerate() {
                let bits = table[(r >> (16 * k)) as usize & 0xffff];
                pair.copy_from_slice(&bits.to_le_bytes());
            }
        }
        let rest = words.into_remainder();
        let r = rng.next();
        for (k, pair) in rest.chunks_exact_mut(2).enumerate() {
            pair.copy_from_slice(&table[(r >> (16 * k)) as usize & 0xffff].to_le_bytes());
        }
    }
}

/// Fills `bytes` with random bytes passed through `map`.
fn fill_bytes(rng: &mut WyRand, bytes: &mut [u8], map: impl Fn(u8) -> u8) {
    for word in bytes.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        for (b, &x) in word.iter_mut().zip(&r) {
            *b = map(x);
        }
    }
}
