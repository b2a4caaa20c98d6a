//! Synthetic gpt-oss-20b checkpoints: the layouts match what was published (OpenAI's index
//! and config) and what mlx-lm writes (`tests/fixtures/gpt-oss-20b-mlx-layout.json`, made by
//! running mlx-lm's own conversion code); the files load as Minerva models.

use std::path::{Path, PathBuf};

use minerva_models::formats::safetensors::SafetensorsModel;
use minerva_models::loader::{build, open_checkpoint, ModelFiles};
use minerva_models::synthetic::{self, CheckpointSpec, Fill, GptOssDims, Layout};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn spec(layout: Layout) -> CheckpointSpec {
    synthetic::gpt_oss(layout, &GptOssDims::GPT_OSS_20B).unwrap()
}

fn find<'a>(spec: &'a CheckpointSpec, name: &str) -> (&'a str, String, Vec<usize>) {
    spec.shards
        .iter()
        .find_map(|s| {
            let t = s.tensors.iter().find(|t| t.name == name)?;
            Some((s.file.as_str(), format!("{:?}", t.dtype), t.shape.clone()))
        })
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

#[test]
fn openai_layout_is_the_published_one() {
    let spec = spec(Layout::OpenAi);
    let files: Vec<&str> = spec.shards.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "model-00000-of-00002.safetensors",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    assert_eq!(spec.tensors().count(), 459);
    let counts: Vec<usize> = spec.shards.iter().map(|s| s.tensors.len()).collect();
    assert_eq!(counts, [196, 197, 66]);
    // The published index: total_size, and where it splits (mid-layer 18 and 6).
    let index = spec.index.as_ref().unwrap();
    assert_eq!(index["metadata"]["total_size"], 13761264768u64);
    assert_eq!(spec.total_bytes(), 13761264768);
    let shard = |name: &str| index["weight_map"][name].as_str().unwrap().to_string();
    let s = |i: usize| format!("model-{i:05}-of-00002.safetensors");
    for (name, i) in [
        ("model.layers.18.self_attn.v_proj.bias", 0),
        ("model.layers.18.self_attn.q_proj.weight", 1),
        ("model.layers.6.mlp.experts.gate_up_proj_bias", 1),
        ("model.layers.6.mlp.experts.gate_up_proj_blocks", 2),
        ("model.layers.9.post_attention_layernorm.weight", 2),
        ("model.embed_tokens.weight", 2),
        ("lm_head.weight", 2),
    ] {
        assert_eq!(shard(name), s(i), "{name}");
    }
    let l = "model.layers.0";
    for (name, dtype, shape) in [
        ("model.embed_tokens.weight", "BF16", vec![201088, 2880]),
        ("lm_head.weight", "BF16", vec![201088, 2880]),
        (
            &format!("{l}.self_attn.q_proj.weight"),
            "BF16",
            vec![4096, 2880],
        ),
        (
            &format!("{l}.self_attn.o_proj.weight"),
            "BF16",
            vec![2880, 4096],
        ),
        (&format!("{l}.self_attn.k_proj.bias"), "BF16", vec![512]),
        (&format!("{l}.self_attn.sinks"), "BF16", vec![64]),
        (&format!("{l}.mlp.router.weight"), "BF16", vec![32, 2880]),
        (
            &format!("{l}.mlp.experts.gate_up_proj_blocks"),
            "U8",
            vec![32, 5760, 90, 16],
        ),
        (
            &format!("{l}.mlp.experts.gate_up_proj_scales"),
            "U8",
            vec![32, 5760, 90],
        ),
        (
            &format!("{l}.mlp.experts.gate_up_proj_bias"),
            "BF16",
            vec![32, 5760],
        ),
        (
            &format!("{l}.mlp.experts.down_proj_blocks"),
            "U8",
            vec![32, 2880, 90, 16],
        ),
        (
            &format!("{l}.mlp.experts.down_proj_bias"),
            "BF16",
            vec![32, 2880],
        ),
    ] {
        let (_, d, s) = find(&spec, name);
        assert_eq!((d.as_str(), s), (dtype, shape), "{name}");
    }
    let published = std::fs::read_to_string(fixture("gpt-oss-20b-hub-config.json")).unwrap();
    assert_eq!(
        spec.config,
        serde_json::from_str::<Value>(&published).unwrap()
    );
}

#[test]
fn mlx_layout_is_what_mlx_lm_writes() {
    let text = std::fs::read_to_string(fixture("gpt-oss-20b-mlx-layout.json")).unwrap();
    let want: Value = serde_json::from_str(&text).unwrap();
    let spec = spec(Layout::Mlx);
    assert_eq!(spec.tensors().count(), 775);
    assert_eq!(spec.config, want["config"]);
    assert_eq!(spec.index.as_ref().unwrap(), &want["index"]);
    let shards = want["shards"].as_object().unwrap();
    assert_eq!(spec.shards.len(), shards.len());
    for (ours, (file, theirs)) in spec.shards.iter().zip(shards) {
        assert_eq!(&ours.file, file);
        assert_eq!(theirs["metadata"]["format"], spec.format);
        let rows: Vec<Value> = ours
            .tensors
            .iter()
            .map(|t| serde_json::json!([t.name, t.dtype, t.shape]))
            .collect();
        assert_eq!(&Value::from(rows), &theirs["tensors"], "{file}");
    }
}

const TINY: GptOssDims = GptOssDims::TINY;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minerva-synth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn written_files_open_and_build_for_both_layouts() {
    for layout in [Layout::OpenAi, Layout::Mlx] {
        let dir = temp_dir(&format!("{layout:?}"));
        let spec = synthetic::gpt_oss(layout, &TINY).unwrap();
        synthetic::write(&spec, &dir, Fill::Random { seed: 7 }, |_| {}).unwrap();
        let model = SafetensorsModel::open(&dir).unwrap();
        assert_eq!(model.len(), spec.tensors().count());
        let (checkpoint, config) = open_checkpoint(&ModelFiles::locate(&dir).unwrap()).unwrap();
        let built = build(&checkpoint, config).unwrap();
        assert_eq!(built.info().layers, 2);
        // Same seed, same bytes; another seed, other bytes.
        let again = temp_dir(&format!("{layout:?}-again"));
        synthetic::write(&spec, &again, Fill::Random { seed: 7 }, |_| {}).unwrap();
        let file = &spec.shards[0].file;
        let read = |d: &Path| std::fs::read(d.join(file)).unwrap();
        assert_eq!(read(&dir), read(&again));
        synthetic::write(&spec, &again, Fill::Random { seed: 8 }, |_| {}).unwrap();
        assert_ne!(read(&dir), read(&again));
        for d in [dir, again] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}

/// The real 20B OpenAI layout as sparse zero files (no disk blocks): it opens with 459
/// tensors and builds as a model.
#[test]
fn full_size_openai_layout_builds_from_sparse_files() {
    let dir = temp_dir("openai-20b-zeros");
    let spec = spec(Layout::OpenAi);
    synthetic::write(&spec, &dir, Fill::Zeros, |_| {}).unwrap();
    let (checkpoint, config) = open_checkpoint(&ModelFiles::locate(&dir).unwrap()).unwrap();
    let built = build(&checkpoint, config).unwrap();
    assert_eq!(built.info().layers, 24);
    assert_eq!(built.info().vocab, 201088);
    let model = SafetensorsModel::open(&dir).unwrap();
    assert_eq!(model.len(), 459);
    assert_eq!(model.files().len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_dimensions_are_refused() {
    let dims = GptOssDims {
        hidden: 100,
        ..TINY
    };
    let err = synthetic::gpt_oss(Layout::Mlx, &dims).unwrap_err();
    assert!(err.contains("multiples of 64"), "{err}");
}
