//! `minerva inspect`: what a checkpoint holds.

use std::path::{Path, PathBuf};

use clap::Args;
use minerva_models::checkpoint::Checkpoint;
use minerva_models::formats::gguf::MetaValue;
use minerva_models::formats::TensorInfo;
use minerva_models::loader::{open_checkpoint, ModelFiles};

use crate::model_path;

#[derive(Args)]
pub struct InspectArgs {
    /// GGUF file, safetensors file or model directory [default: --model or the default model]
    pub file: Option<PathBuf>,
    /// List every tensor (otherwise the first 20)
    #[arg(long)]
    pub all: bool,
    /// Print one JSON object (metadata, every tensor, the config) instead of text
    #[arg(long)]
    pub json: bool,
}

/// A GGUF metadata value as JSON.
fn json_value(v: &MetaValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        MetaValue::String(s) => Value::from(s.as_str()),
        MetaValue::Array(items) => Value::Array(items.iter().map(json_value).collect()),
        MetaValue::Bool(b) => Value::from(*b),
        MetaValue::F32(x) => Value::from(*x),
        MetaValue::F64(x) => Value::from(*x),
        other => match other.as_i128() {
            Some(i) => i64::try_from(i)
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(i as u64)),
            None => Value::Null,
        },
    }
}

fn json_tensors(tensors: &[TensorInfo]) -> serde_json::Value {
    tensors
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "bytes": t.nbytes,
            })
        })
        .collect()
}

fn show_value(v: &MetaValue) -> String {
    match v {
        MetaValue::String(s) if s.len() > 120 => format!(
            "{:?}… ({} bytes)",
            &s[..s.floor_char_boundary(120)],
            s.len()
        ),
        MetaValue::String(s) => format!("{s:?}"),
        MetaValue::Array(items) if items.len() > 8 => {
            let head: Vec<String> = items[..4].iter().map(show_value).collect();
            format!("[{}, … {} items]", head.join(", "), items.len())
        }
        MetaValue::Array(items) => format!(
            "[{}]",
            items.iter().map(show_value).collect::<Vec<_>>().join(", ")
        ),
        MetaValue::Bool(b) => b.to_string(),
        MetaValue::F32(x) => x.to_string(),
        MetaValue::F64(x) => x.to_string(),
        other => other
            .as_i128()
            .map_or_else(|| format!("{other:?}"), |i| i.to_string()),
    }
}

fn show_tensors(tensors: &[TensorInfo], all: bool) {
    let total: usize = tensors.iter().map(|t| t.nbytes).sum();
    println!("tensors: {} ({:.1} MB)", tensors.len(), total as f64 / 1e6);
    let shown = if all {
        tensors.len()
    } else {
        tensors.len().min(20)
    };
    let width = tensors[..shown]
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0);
    for t in &tensors[..shown] {
        println!("  {:<width$} {:<5} {:?}", t.name, t.dtype.name(), t.shape);
    }
    if shown < tensors.len() {
        println!("  … {} more (--all lists them)", tensors.len() - shown);
    }
}

pub fn inspect(model: Option<&Path>, args: &InspectArgs) -> anyhow::Result<()> {
    let path = model_path::resolve(args.file.as_deref().or(model))?;
    let files = ModelFiles::locate(&path)?;
    let (checkpoint, config) = match open_checkpoint(&files) {
        Ok((c, config)) => (c, Some(config)),
        // Still show what the file holds when we cannot run it.
        Err(err) => match &files {
            ModelFiles::Gguf(p) => {
                eprintln!("note: {err}");
                (
                    Checkpoint::Gguf(minerva_models::formats::gguf::GgufFile::open(p)?),
                    None,
                )
            }
            ModelFiles::Safetensors { .. } => return Err(err.into()),
        },
    };
    if args.json {
        let (format, metadata, tensors) = match &checkpoint {
            Checkpoint::Gguf(g) => (
                "gguf",
                g.metadata()
                    .iter()
                    .map(|(k, v)| (k.clone(), json_value(v)))
                    .collect::<serde_json::Map<_, _>>(),
                g.tensors(),
            ),
            Checkpoint::Safetensors(s) => (
                "safetensors",
                s.metadata()
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                    .collect(),
                s.tensors(),
            ),
        };
        let report = serde_json::json!({
            "path": path,
            "format": format,
            "metadata": metadata,
            "tensors": json_tensors(tensors),
            // The parsed configuration as Minerva reads it (Rust debug notation); null when
            // Minerva cannot run the checkpoint.
            "config": config.map(|c| format!("{c:?}")),
        });
        println!("{report}");
        return Ok(());
    }
    match &checkpoint {
        Checkpoint::Gguf(g) => {
            println!(
                "{}: GGUF v{}, alignment {}",
                g.path().display(),
                g.version(),
                g.alignment()
            );
            println!("metadata: {} keys", g.metadata().len());
            for (key, value) in g.metadata() {
                println!("  {key} = {}", show_value(value));
            }
            show_tensors(g.tensors(), args.all);
        }
        Checkpoint::Safetensors(s) => {
            for (file, _) in s.files() {
                println!("{}: safetensors", file.display());
            }
            for (key, value) in s.metadata() {
                println!("  {key} = {value:?}");
            }
            show_tensors(s.tensors(), args.all);
        }
    }
    if let Some(config) = config {
        println!("config: {config:#?}");
    }
    Ok(())
}
