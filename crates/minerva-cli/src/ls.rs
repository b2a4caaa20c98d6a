//! `minerva ls`: the models `--model` finds by name (Minerva's cache and the Hugging Face
//! hub cache), with what each is.

use clap::Args;
use minerva_models::local_models::{describe, Caches};

#[derive(Args)]
pub struct LsArgs {
    /// Print one JSON object per model instead of a table
    #[arg(long)]
    pub json: bool,
}

pub fn ls(args: &LsArgs) -> anyhow::Result<()> {
    let caches = Caches::from_env();
    let models = caches.list();
    if models.is_empty() && !args.json {
        println!(
            "no models in Minerva's cache ({}) or the Hugging Face cache ({})",
            caches.minerva.display(),
            caches.hub.display()
        );
        return Ok(());
    }
    let mut rows = Vec::with_capacity(models.len());
    for m in &models {
        // A model that cannot be read is still listed, with why.
        let (format, quantization, architecture, bytes) = match describe(&m.path) {
            Ok(d) => (
                d.format.to_string(),
                d.quantization,
                d.architecture,
                d.bytes,
            ),
            Err(e) => (
                "?".to_string(),
                "?".to_string(),
                format!("unreadable: {e}"),
                0,
            ),
        };
        if args.json {
            let row = serde_json::json!({
                "name": m.name,
                "path": m.path,
                "format": format,
                "quantization": quantization,
                "architecture": architecture,
                "bytes": bytes,
            });
            println!("{row}");
            continue;
        }
        rows.push([
            m.name.clone(),
            format,
            quantization,
            architecture,
            human_size(bytes),
        ]);
    }
    if args.json {
        return Ok(());
    }
    let header = ["NAME", "FORMAT", "QUANT", "ARCH", "SIZE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}

/// `bytes` for people: GB from 1 GiB on, else MB.
pub(crate) fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / 1e9),
        b => format!("{:.0} MB", b as f64 / 1e6),
    }
}
