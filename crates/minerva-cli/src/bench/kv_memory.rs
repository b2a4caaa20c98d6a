//! `minerva bench --kv-memory`: what one sequence's KV cache costs, per storage type and
//! context length, as the engine's own cache lays it out (pages, sliding-window rings,
//! quantization parameters), without running anything.

use std::path::Path;

use minerva_core::KvDType::{Int4, Int8, F16, F32};
use minerva_engine::{KvConfig, PagedKvCache};
use minerva_models::load_model;

/// Context lengths of the table.
const CONTEXTS: [usize; 3] = [8 << 10, 32 << 10, 128 << 10];

pub(super) fn kv_memory(path: &Path, json: bool) -> anyhow::Result<()> {
    let model = load_model(path)?;
    let info = model.info();
    let gb = |b: usize| b as f64 / 1e9;
    let mut rows = Vec::new();
    // Keys and values alike, then int8 keys with int4 values (see `minerva_core::kv_pages`).
    let dtypes = [
        (F32, F32),
        (F16, F16),
        (Int8, Int8),
        (Int4, Int4),
        (Int8, Int4),
    ];
    for (keys, values) in dtypes {
        let config = KvConfig::with_dtypes(keys, values);
        let at = CONTEXTS.map(|len| PagedKvCache::sequence_bytes(info, config, len));
        // Per token at the longest context: what each further page of tokens adds (the
        // rings are full by then).
        let next = PagedKvCache::sequence_bytes(info, config, CONTEXTS[2] + config.page_size);
        rows.push((config.dtype_name(), (next - at[2]) / config.page_size, at));
    }
    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(dtype, per_token, at)| {
                serde_json::json!({
                    "kv_dtype": dtype,
                    "bytes_per_token": per_token,
                    "bytes_at": CONTEXTS.iter().zip(at).map(|(c, b)| (c.to_string(), *b)).collect::<std::collections::BTreeMap<_, _>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "model": path.display().to_string(), "kv": rows })
        );
        return Ok(());
    }
    println!(
        "KV cache of one sequence, {} ({} layers, {} KV heads x {}, context {}):",
        path.display(),
        info.layers,
        info.kv_heads,
        info.head_dim,
        info.context_length
    );
    println!(
        "{:<9} {:>14} {:>10} {:>10} {:>10}",
        "dtype", "bytes/token", "8k", "32k", "128k"
    );
    for (dtype, per_token, at) in rows {
        println!(
            "{:<9} {:>14} {:>9.3}G {:>9.3}G {:>9.3}G",
            dtype,
            per_token,
            gb(at[0]),
            gb(at[1]),
            gb(at[2])
        );
    }
    if info.context_length < CONTEXTS[2] {
        println!(
            "(contexts past the model's {} tokens are shown for comparison only)",
            info.context_length
        );
    }
    Ok(())
}
