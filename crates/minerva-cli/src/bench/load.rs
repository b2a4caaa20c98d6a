//! `minerva bench --load`: start to ready, resident memory, decode speed from token ids.

use std::path::Path;
use std::time::{Duration, Instant};

use minerva_engine::KvConfig;
use minerva_models::loader::{build, open_checkpoint, ModelFiles};
use minerva_models::CausalLm;

use super::{decode_rate, median, BenchArgs};

/// Prompt length for the decode measurement (as `minerva bench` decodes after 8 tokens).
const PROMPT: usize = 8;

/// One load: (time to open = locate + map + parse headers and config, time to build, model).
fn load_once(path: &Path) -> anyhow::Result<(Duration, Duration, Box<dyn CausalLm>)> {
    let start = Instant::now();
    let (checkpoint, config) = open_checkpoint(&ModelFiles::locate(path)?)?;
    let opened = start.elapsed();
    let model = build(&checkpoint, config)?;
    Ok((opened, start.elapsed() - opened, model))
}

/// Resident memory of this process from `/proc/self/status`, in bytes: total, anonymous
/// (heap: converted tensors, caches) and file-backed (touched pages of the mapped weights).
#[derive(Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

impl Rss {
    fn now() -> Option<Rss> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            let kb: u64 = line[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kb * 1024)
        };
        Some(Rss {
            total: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }

    fn show(rss: Option<Rss>) -> String {
        match rss {
            Some(r) => format!(
                "{:.0} MiB (anon {:.0} MiB, file {:.0} MiB)",
                mib(r.total),
                mib(r.anon),
                mib(r.file)
            ),
            None => "n/a".into(),
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

pub(super) fn bench_load(
    path: &Path,
    runs: usize,
    args: &BenchArgs,
    kv: KvConfig,
) -> anyhow::Result<()> {
    let rss_start = Rss::now();
    // The warm-up run pulls headers and the small tensors into the page cache.
    drop(load_once(path)?);
    let mut times = Vec::with_capacity(runs);
    let mut model = None;
    for _ in 0..runs {
        // The previous model is dropped before the next load, so memory does not stack up.
        drop(model.take());
        let (open, build, m) = load_once(path)?;
        times.push((open, build));
        model = Some(m);
    }
    let model = model.expect("runs > 0");
    let rss_loaded = Rss::now();
    let total = |&(o, b): &(Duration, Duration)| (o + b).as_secs_f64() * 1e3;
    let load_min = times.iter().map(total).fold(f64::INFINITY, f64::min);
    let load_median = median(times.iter().map(total).collect());
    let open_median = median(times.iter().map(|t| t.0.as_secs_f64() * 1e3).collect());
    let build_median = median(times.iter().map(|t| t.1.as_secs_f64() * 1e3).collect());

    // Any ids in the vocabulary will do: speed does not depend on them.
    let vocab = model.info().vocab as u64;
    let prompt: Vec<u32> = (0..PROMPT as u64)
        .map(|i| ((i * 7919 + 13) % vocab) as u32)
        .collect();
    let max_len = Some(PROMPT + args.gen_tokens + 1);
    let decode = decode_rate(model.as_ref(), kv, &prompt, args.gen_tokens, max_len, None)?.tok_s;
    let rss_decoded = Rss::now();
    let threads = rayon::current_num_threads();
    let round = |x: f64| (x * 10.0).round() / 10.0;

    if args.json {
        let rss = |r: Option<Rss>| {
            r.map(|r| {
                serde_json::json!({
                    "total_mib": round(mib(r.total)),
                    "anon_mib": round(mib(r.anon)),
                    "file_mib": round(mib(r.file)),
                })
            })
        };
        println!(
            "{}",
            serde_json::json!({
                "engine": "minerva",
                "version": env!("CARGO_PKG_VERSION"),
                "model": path.display().to_string(),
                "arch": model.info().arch,
                "threads": threads,
                "runs": runs,
                "load_ms_min": round(load_min),
                "load_ms_median": round(load_median),
                "open_ms_median": round(open_median),
                "build_ms_median": round(build_median),
                "rss_start": rss(rss_start),
                "rss_loaded": rss(rss_loaded),
                "rss_after_decode": rss(rss_decoded),
                "decode_tok_s": (decode * 100.0).round() / 100.0,
                "prompt_tokens": PROMPT,
                "gen_tokens": args.gen_tokens,
            })
        );
    } else {
        println!("model: {} ({})", path.display(), model.info().arch);
        println!(
            "load (start to ready, {runs} runs after a warm-up): min {load_min:.1} ms, median \
             {load_median:.1} ms (open {open_median:.1} ms + build {build_median:.1} ms)"
        );
        println!("memory at start: {}", Rss::show(rss_start));
        println!("memory when loaded: {}", Rss::show(rss_loaded));
        println!("memory after decoding: {}", Rss::show(rss_decoded));
        println!(
            "decode ({} tokens after {PROMPT}, {threads} threads): {decode:.2} tok/s",
            args.gen_tokens
        );
    }
    Ok(())
}
