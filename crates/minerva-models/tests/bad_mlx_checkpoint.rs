//! Broken MLX checkpoints: each mismatch between config.json and the tensors ends the load
//! with one line naming the tensor (or config field) and the problem — never a panic.
//! Each case copies tests/fixtures/tiny-gpt-oss-mlx and breaks one thing.

use std::path::{Path, PathBuf};

use minerva_models::loader::load_model;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tiny-gpt-oss-mlx"
);

struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// A copy of the fixture with its tensors and config edited by `edit`; returns the load error.
fn load_broken(case: &str, edit: impl FnOnce(&mut Vec<Tensor>, &mut Value)) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bad-mlx-{case}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(Path::new(FIXTURE).join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<Tensor> = file
        .tensors()
        .into_iter()
        .map(|(name, t)| Tensor {
            name,
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            data: t.data().to_vec(),
        })
        .collect();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(Path::new(FIXTURE).join("config.json")).unwrap())
            .unwrap();
    edit(&mut tensors, &mut config);
    let views = tensors.iter().map(|t| {
        (
            t.name.clone(),
            TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
        )
    });
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    match load_model(&dir) {
        Ok(_) => panic!("{case}: the broken checkpoint loaded"),
        Err(e) => {
            let e = e.to_string();
            assert!(!e.contains('\n'), "{case}: not one line: {e}");
            e
        }
    }
}

fn find<'a>(tensors: &'a mut [Tensor], name: &str) -> &'a mut Tensor {
    tensors.iter_mut().find(|t| t.name == name).expect(name)
}

#[test]
fn missing_tensor_is_named() {
    let e = load_broken("missing", |t, _| {
        t.retain(|t| t.name != "model.layers.1.self_attn.sinks")
    });
    assert!(
        e.ends_with("missing tensor 'model.layers.1.self_attn.sinks'"),
        "{e}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let e = load_broken("shape", |t, _| {
        let sinks = find(t, "model.layers.0.self_attn.sinks");
        sinks.shape = vec![2, 2];
    });
    assert!(
        e.contains("tensor 'model.layers.0.self_attn.sinks' has shape [2, 2], expected [4]"),
        "{e}"
    );
}

#[test]
fn group_size_that_disagrees_with_config_is_named() {
    // config.json says group 32 for q_proj; the tensors hold group 64.
    let e = load_broken("group-config", |_, c| {
        c["quantization"]["model.layers.0.self_attn.q_proj"]["group_size"] = 32.into();
    });
    assert!(
        e.contains("tensor 'model.layers.0.self_attn.q_proj.weight' holds affine 8-bit group 64 codes but config.json's quantization says affine 8-bit group 32"),
        "{e}"
    );
    // Scales that do not cut the inputs into whole groups.
    let e = load_broken("group-shape", |t, _| {
        let scales = find(t, "model.layers.0.self_attn.k_proj.scales");
        let rows = scales.shape[0];
        scales.shape = vec![rows / 2, 2];
    });
    assert!(e.contains("model.layers.0.self_attn.k_proj"), "{e}");
}

#[test]
fn unsupported_bits_are_named() {
    let e = load_broken("bits-config", |_, c| c["quantization"]["bits"] = 7.into());
    assert!(
        e.ends_with("config.json: quantization.bits: 7 is not supported (2, 3, 4, 5, 6 or 8)"),
        "{e}"
    );
    // Codes packed at 7 bits per input (hidden 64 -> 14 words per row).
    let e = load_broken("bits-tensor", |t, _| {
        let codes = find(t, "model.layers.0.self_attn.v_proj.weight");
        let rows = codes.shape[0];
        codes.shape = vec![rows, 14];
        codes.data.truncate(rows * 14 * 4);
    });
    assert!(
        e.contains("tensor 'model.layers.0.self_attn.v_proj.weight'") && e.contains("7-bit"),
        "{e}"
    );
}

#[test]
fn quantized_module_marked_unquantized_is_named() {
    let e = load_broken("unquantized", |_, c| {
        c["quantization"]["model.layers.0.mlp.experts.down_proj"] = false.into();
    });
    assert!(
        e.contains(
            "'model.layers.0.mlp.experts.down_proj.weight' is quantized (mxfp4 4-bit group 32)"
        ),
        "{e}"
    );
}
