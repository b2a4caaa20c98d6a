//! `minerva convert` of the tiny transformers gpt-oss (f32, `tests/fixtures/tiny-gpt-oss`)
//! against mlx-lm's conversion of the same weights (`tests/fixtures/tiny-gpt-oss-mlx`, made
//! by `scripts/fixtures/make_tiny_gpt_oss_mlx.py`): mlx-lm cast every float to bf16 (the hub
//! config's torch_dtype) before quantizing, so converting with `dtype = bf16` must give the
//! same 135 tensors — names, dtypes, shapes and bytes — and the same "quantization" block.

use std::path::{Path, PathBuf};

use minerva_core::DType;
use minerva_models::convert::{convert, ConvertOptions, QuantPlan, QuantSpec, Rule};
use minerva_models::formats::safetensors::SafetensorsModel;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minerva-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn gpt_oss_conversion_is_byte_identical_to_mlx_lm() {
    let out = scratch("mxfp4-q8");
    let mut options = ConvertOptions::new(&fixture("tiny-gpt-oss"), &out);
    options.dtype = Some(DType::BF16);
    let summary = convert(&options).unwrap_or_else(|e| panic!("{e}"));
    let ours = SafetensorsModel::open(&out).unwrap();
    let theirs = SafetensorsModel::open(&fixture("tiny-gpt-oss-mlx")).unwrap();
    assert_eq!(
        ours.metadata().get("format").map(String::as_str),
        Some("mlx")
    );
    let names = |m: &SafetensorsModel| {
        m.tensors()
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&ours), names(&theirs));
    let mut quantized_bytes = 0;
    for t in theirs.tensors() {
        let o = ours.tensor(&t.name).unwrap();
        assert_eq!((o.dtype, &o.shape), (t.dtype, &t.shape), "{}", t.name);
        assert!(
            o.bytes() == t.bytes(),
            "{}: bytes differ from mlx-lm's",
            t.name
        );
        if matches!(t.dtype, DType::U32 | DType::U8) {
            quantized_bytes += t.nbytes;
        }
    }
    let (cfg, want) = (
        json(&out.join("config.json")),
        json(&fixture("tiny-gpt-oss-mlx/config.json")),
    );
    for key in ["quantization", "quantization_config"] {
        assert_eq!(cfg[key], want[key], "{key}");
    }
    let index = json(&out.join("model.safetensors.index.json"));
    let want_index = json(&fixture("tiny-gpt-oss-mlx/model.safetensors.index.json"));
    assert_eq!(index["weight_map"], want_index["weight_map"]);
    assert_eq!(
        index["metadata"]["total_size"],
        want_index["metadata"]["total_size"]
    );
    assert!(out.join("generation_config.json").is_file());
    eprintln!(
        "{} tensors ({} quantized modules, {quantized_bytes} code/scale bytes) identical to mlx-lm's",
        summary.tensors, summary.quantized_modules
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// Shards split at the size limit, every tensor lands in the shard the index names, and the
/// result holds the same tensors as one file; f32 sources stay f32 by default (the config
/// names no torch_dtype), so affine scales are f32.
#[test]
fn sharded_output_and_f32_default() {
    let one = scratch("one");
    let many = scratch("many");
    let plan = QuantPlan {
        global: Some(QuantSpec::Affine { bits: 4, group: 32 }),
        rules: vec![Rule::parse("experts=mxfp4", None).unwrap()],
    };
    let mut options = ConvertOptions::new(&fixture("tiny-gpt-oss"), &one);
    options.plan = Some(plan);
    convert(&options).unwrap();
    options.out = many.clone();
    options.max_shard_bytes = 64 << 10;
    convert(&options).unwrap();
    let index = json(&many.join("model.safetensors.index.json"));
    let files: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(files.len() > 2, "{files:?}");
    assert!(files
        .iter()
        .all(|f| f.ends_with(&format!("-of-{:05}.safetensors", files.len()))));
    let (a, b) = (
        SafetensorsModel::open(&one).unwrap(),
        SafetensorsModel::open(&many).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for t in a.tensors() {
        assert!(
            b.tensor(&t.name).unwrap().bytes() == t.bytes(),
            "{}",
            t.name
        );
    }
    let scales = a.tensor("model.layers.0.self_attn.q_proj.scales").unwrap();
    assert_eq!(
        (scales.dtype, scales.shape.as_slice()),
        (DType::F32, &[128usize, 2][..])
    );
    let experts = a
        .tensor("model.layers.0.mlp.experts.gate_proj.scales")
        .unwrap();
    assert_eq!(experts.dtype, DType::U8);
    let q = &json(&one.join("config.json"))["quantization"];
    assert_eq!(
        (q["bits"].as_u64(), q["group_size"].as_u64()),
        (Some(4), Some(32))
    );
    assert_eq!(q["model.layers.0.mlp.experts.gate_proj"]["mode"], "mxfp4");
    assert_eq!(q["model.layers.0.mlp.router"]["bits"], 8);
    for dir in [one, many] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Errors name the file and the tensor, and leave no output behind.
#[test]
fn bad_input_leaves_nothing() {
    let out = scratch("exists");
    std::fs::create_dir_all(&out).unwrap();
    let err = convert(&ConvertOptions::new(&fixture("tiny-gpt-oss"), &out)).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();

    // A gpt-oss whose gate_up_proj has lost an axis.
    let src = scratch("bad-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(fixture("tiny-gpt-oss/config.json"), src.join("config.json")).unwrap();
    let model = SafetensorsModel::open(&fixture("tiny-gpt-oss")).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = model
        .tensors()
        .iter()
        .map(|t| {
            let mut shape = t.shape.clone();
            if t.name == "model.layers.2.mlp.experts.gate_up_proj" {
                shape = vec![shape[0] * shape[1], shape[2]];
            }
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, t.bytes());
            (t.name.clone(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(tensors, None, &src.join("model.safetensors")).unwrap();
    let out = scratch("bad-out");
    let err = convert(&ConvertOptions::new(&src, &out))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.layers.2.mlp.experts.gate_up_proj"),
        "{err}"
    );
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("bad-out.partial"))
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(&src).unwrap();
}
