//! `minerva bench`: prefill and decode throughput, measured like `scripts/bench_llama_cpp.py`
//! measures llama.cpp (same prompt text, fresh cache per run, one warm-up, median of runs).
//! `minerva bench --load`: time from start to ready, resident memory and decode speed, from
//! token ids (no tokenizer needed, so synthetic checkpoints work too).

use std::time::Instant;

use anyhow::{ensure, Context};
use clap::Args;
use minerva_core::graph;
use minerva_core::ops::{Draw, SampleSettings};
use minerva_core::Device;
use minerva_engine::sampler::argmax;
use minerva_engine::{forward, DecodeStep, KvConfig, SequenceCache};
use minerva_models::{CausalLm, Logits};

use crate::model_path::ModelChoice;

mod kv_memory;
mod load;
mod streams;

/// The prompt text `scripts/bench_llama_cpp.py` uses, so both engines see the same tokens.
const TEXT: &str =
    "The history of computing is a story of ideas that became machines. Early mechanical \
calculators could add and subtract, but they could not be programmed. In the nineteenth \
century, Charles Babbage designed the Analytical Engine, a general purpose machine that \
would have read its instructions from punched cards, and Ada Lovelace wrote what many \
consider the first program for it. A century later, electronic computers filled whole rooms, \
consumed enormous amounts of power, and were programmed by rewiring panels or flipping \
switches. The invention of the transistor, and then of the integrated circuit, made \
computers smaller, cheaper and far more reliable. Personal computers arrived in homes and \
offices, networks connected them, and the web turned them into windows onto a shared \
library of human knowledge. Today, language models running on ordinary processors can \
answer questions, summarize documents and write code, and the engineering challenge has \
moved to making them fast and efficient on the hardware that people already own. ";

/// The draws of `--sample`: settings chat users commonly run with.
const BENCH_SAMPLING: SampleSettings = SampleSettings {
    temperature: 1.0,
    top_k: 40,
    top_p: 0.95,
    min_p: 0.0,
};

#[derive(Args)]
pub struct BenchArgs {
    /// Prompt length for the prefill measurement
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens generated (one at a time) for the decode measurement
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Measured runs (after one warm-up); the median is reported [default: 3, 5 with --load]
    #[arg(long)]
    pub runs: Option<usize>,
    /// Measure loading instead: start to ready (files located, weights mapped, config
    /// parsed, model built; no tokenizer), resident memory, then decode speed from token ids
    #[arg(long)]
    pub load: bool,
    /// Print what one sequence's KV cache takes per token and at 8k / 32k / 128k tokens,
    /// for each --kv-dtype, and exit
    #[arg(long)]
    pub kv_memory: bool,
    /// Concurrent generations to measure through the continuous batch, e.g. 1,4,10,32,64
    /// (mixed prompt lengths, --gen-tokens each; total and per-stream tok/s)
    #[arg(long, value_delimiter = ',')]
    pub streams: Vec<usize>,
    /// Time to first token of a request whose first N tokens an earlier request shared,
    /// with and without the prefix cache (e.g. 1024)
    #[arg(long)]
    pub shared_prefix: Option<usize>,
    /// Write the compiled plans of one decode step (what fused into each pass) to this file
    /// as text, and print their totals
    #[arg(long)]
    pub dump_graph: Option<std::path::PathBuf>,
    /// Print one JSON line instead of text
    #[arg(long)]
    pub json: bool,
    /// Decode by sampling (temperature 1, top-k 40, top-p 0.95, drawn where the logits are)
    /// instead of greedily
    #[arg(long)]
    pub sample: bool,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A cache for `model` that takes a whole prompt of up to `max_len` tokens in one pass, as
/// the benchmarks run them (sliding-window rings are sized for that).
fn whole_prompt_cache(
    model: &dyn CausalLm,
    max_len: Option<usize>,
    kv: KvConfig,
) -> anyhow::Result<SequenceCache> {
    let max_pass_tokens = max_len.unwrap_or(model.info().context_length);
    let kv = KvConfig {
        max_pass_tokens,
        ..kv
    };
    Ok(SequenceCache::with_config(model.info(), max_len, kv)?)
}

/// Greedy decode speed: prefill `prompt` into a fresh cache, then time `gen_tokens` steps of
/// one token each (on a GPU, replays of the captured step). Fails if the logits are not
/// finite (a broken model or checkpoint), checked after the prompt and after the last step.
fn decode_rate(
    model: &dyn CausalLm,
    kv: KvConfig,
    prompt: &[u32],
    gen_tokens: usize,
    max_len: Option<usize>,
    sample: Option<SampleSettings>,
) -> anyhow::Result<DecodeRun> {
    let mut cache = whole_prompt_cache(model, max_len, kv)?;
    let finite = |logits: &[f32]| -> anyhow::Result<u32> {
        ensure!(
            logits.iter().all(|x| x.is_finite()),
            "the model's logits are not finite"
        );
        Ok(argmax(logits))
    };
    let logits = forward(model, prompt, &mut cache, Logits::Last)?;
    let mut token = finite(&logits.to_f32_vec()?)?;
    let mut step = DecodeStep::new();
    let t = Instant::now();
    for counter in 0..gen_tokens as u32 {
        token = match sample {
            Some(settings) => {
                let draw = Draw { seed: 0, counter };
                step.sample(model, &mut cache, token, settings, draw)?
            }
            None => step.greedy(model, &mut cache, token)?,
        };
    }
    let tok_s = gen_tokens as f64 / t.elapsed().as_secs_f64();
    finite(&step.logits(model, &mut cache, token)?)?;
    Ok(DecodeRun {
        tok_s,
        graph_nodes: step.graph_nodes(),
    })
}

struct DecodeRun {
    tok_s: f64,
    /// Operations in the captured step, when a graph ran it.
    graph_nodes: Option<usize>,
}

pub fn bench(choice: &ModelChoice, args: &BenchArgs) -> anyhow::Result<()> {
    let runs = args.runs.unwrap_or(if args.load { 5 } else { 3 });
    ensure!(
        runs > 0 && args.prompt_tokens > 0 && args.gen_tokens > 0,
        "--runs, --prompt-tokens and --gen-tokens must be > 0"
    );
    let path = choice.path()?;
    if args.kv_memory {
        return kv_memory::kv_memory(&path, args.json);
    }
    if args.load {
        return load::bench_load(&path, runs, args, choice.kv_config()?);
    }
    let engine = choice.load_engine()?;
    let kv = engine.kv_config();
    let model = engine.model();
    let base = engine.tokenizer().encode(TEXT, false)?;
    if !args.streams.is_empty() {
        return streams::streams(&engine, &base, &args.streams, args.gen_tokens, args.json);
    }
    if let Some(prefix) = args.shared_prefix {
        return streams::shared_prefix(&engine, &base, prefix, runs, args.json);
    }
    let prompt: Vec<u32> = base
        .iter()
        .copied()
        .cycle()
        .take(args.prompt_tokens)
        .collect();
    let short = &base[..8.min(base.len())];
    let max_len = Some(args.prompt_tokens.max(short.len() + args.gen_tokens) + 1);

    if let Some(file) = &args.dump_graph {
        dump_graph(model, kv, short, max_len, file)?;
    }
    let sample = args.sample.then_some(BENCH_SAMPLING);
    let one_run = || -> anyhow::Result<(f64, f64)> {
        let mut cache = whole_prompt_cache(model, max_len, kv)?;
        let t = Instant::now();
        let logits = forward(model, &prompt, &mut cache, Logits::Last)?;
        argmax(&logits.to_f32_vec()?);
        let prefill = args.prompt_tokens as f64 / t.elapsed().as_secs_f64();

        Ok((
            prefill,
            decode_rate(model, kv, short, args.gen_tokens, max_len, sample)?.tok_s,
        ))
    };
    one_run()?;
    let runs_done = (0..runs)
        .map(|_| one_run())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let prefill = median(runs_done.iter().map(|r| r.0).collect());
    let decode = median(runs_done.iter().map(|r| r.1).collect());
    let threads = rayon::current_num_threads();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "engine": "minerva",
                "version": env!("CARGO_PKG_VERSION"),
                "threads": threads,
                "prefill_tok_s": (prefill * 100.0).round() / 100.0,
                "decode_tok_s": (decode * 100.0).round() / 100.0,
                "prompt_tokens": args.prompt_tokens,
                "gen_tokens": args.gen_tokens,
                "runs": runs,
                "load_ms": (engine.load_time().as_secs_f64() * 1e4).round() / 10.0,
            })
        );
    } else {
        println!("model: {}", path.display());
        println!(
            "threads: {threads}, load {:.1} ms",
            engine.load_time().as_secs_f64() * 1e3
        );
        println!("prefill-{}: {prefill:.1} tok/s", args.prompt_tokens);
        let how = sample.map_or(String::new(), |s| {
            format!(
                ", sampled: temperature {}, top-k {}, top-p {}",
                s.temperature, s.top_k, s.top_p
            )
        });
        println!(
            "decode ({} tokens{how}): {decode:.1} tok/s",
            args.gen_tokens
        );
    }
    if let Device::Cuda(n) = model.device() {
        if !args.json {
            roofline(model, kv, &base, args.gen_tokens, n)?;
        }
        let long: Vec<u32> = base.iter().copied().cycle().take(1024).collect();
        kernel_profile(model, kv, (short, &long), args.gen_tokens, max_len, n)?;
    }
    Ok(())
}

/// Writes the plans one eager decode step of `model` evaluates (after `prompt`) to `file`,
/// and prints how many ops they recorded and how many passes they make.
fn dump_graph(
    model: &dyn CausalLm,
    kv: KvConfig,
    prompt: &[u32],
    max_len: Option<usize>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let mut cache = whole_prompt_cache(model, max_len, kv)?;
    let token = argmax(&forward(model, prompt, &mut cache, Logits::Last)?.to_f32_vec()?);
    // The pass runs on a worker of the thread pool (see `forward`): trace it there. The
    // first step after the prompt compiles the plans of its shapes (its bucket).
    let before = graph::lazy_stats();
    let (logits, plans) =
        rayon::scope(|_| graph::traced(|| forward(model, &[token], &mut cache, Logits::Last)));
    let after = graph::lazy_stats();
    logits?.to_f32_vec()?;
    let mut text = String::new();
    for (i, plan) in plans.iter().enumerate() {
        text += &format!("# evaluation {i}\n{plan}\n");
    }
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
    let recorded: usize = plans.iter().map(|p| p.recorded).sum();
    let passes: usize = plans.iter().map(|p| p.launches()).sum();
    let peak = plans
        .iter()
        .map(|p| p.memory.peak_bytes())
        .max()
        .unwrap_or(0);
    println!(
        "graph ({}): one decode step evaluates {} plans, {recorded} recorded ops in {passes} \
         passes, at most {peak} bytes between passes; compiling its {} new plans took \
         {:.2} ms, building {} new GPU kernel modules {:.1} ms ({} modules in {:.1} ms since \
         the start: the prompt's plans build the modules decode steps share); {} GPU launches \
         ran a chain of kernels; plans in {}",
        if graph::lazy_enabled() { "on" } else { "off" },
        plans.len(),
        after.plans - before.plans,
        (after.compile_time - before.compile_time).as_secs_f64() * 1e3,
        after.kernel_modules - before.kernel_modules,
        (after.kernel_build_time - before.kernel_build_time).as_secs_f64() * 1e3,
        after.kernel_modules,
        after.kernel_build_time.as_secs_f64() * 1e3,
        after.chained_launches - before.chained_launches,
        file.display()
    );
    Ok(())
}

/// On a GPU: the device's copy bandwidth, time to first token for a 1k prompt, and decode
/// speed after 128, 1k and 8k tokens of context against its limit, bytes read per token
/// over bandwidth.
fn roofline(
    model: &dyn CausalLm,
    kv: KvConfig,
    text: &[u32],
    gen_tokens: usize,
    ordinal: usize,
) -> anyhow::Result<()> {
    let gpu = Device::Cuda(ordinal);
    let bandwidth = gpu.copy_bandwidth(1 << 30, 5)?;
    println!("{}: copy bandwidth {bandwidth:.0} GB/s", gpu.name()?);
    let prompt = |len: usize| -> Vec<u32> { text.iter().copied().cycle().take(len).collect() };
    let context_length = model.info().context_length;
    if context_length > 1024 {
        let first = prompt(1024);
        let mut times = Vec::new();
        for _ in 0..3 {
            let mut cache = whole_prompt_cache(model, Some(1025), kv)?;
            let t = Instant::now();
            let logits = forward(model, &first, &mut cache, Logits::Last)?;
            argmax(&logits.to_f32_vec()?);
            times.push(t.elapsed().as_secs_f64());
        }
        println!(
            "time to first token, 1024-token prompt: {:.1} ms",
            1e3 * median(times)
        );
    }
    for context in [128, 1024, 8192] {
        if context + gen_tokens >= context_length {
            break;
        }
        let run = decode_rate(
            model,
            kv,
            &prompt(context),
            gen_tokens,
            Some(context + gen_tokens + 2),
            None,
        )?;
        let rate = run.tok_s;
        if context == 128 {
            if let Some(nodes) = run.graph_nodes {
                println!("decode step: 1 CUDA graph launch of {nodes} operations");
            }
        }
        // The middle of the run stands for it.
        let row_pair = kv.row_pair_bytes(model.info().head_dim);
        let bytes = model.decode_bytes(context + gen_tokens / 2, row_pair) as f64;
        let limit = bandwidth * 1e9 / bytes;
        println!(
            "decode at {context} context: {rate:.1} tok/s, {:.3} GB read per token, limit {limit:.0} tok/s, {:.0}% of it",
            bytes / 1e9,
            100.0 * rate / limit
        );
    }
    Ok(())
}

/// With `MINERVA_CUDA_PROFILE=1`: GPU time per kernel of a prompt (`long`, the 1k-token one
/// of the time to first token) and of eager (not graph) decode steps, per token: where the
/// time goes, and how many launches a graph saves.
fn kernel_profile(
    model: &dyn CausalLm,
    kv: KvConfig,
    (short, long): (&[u32], &[u32]),
    gen_tokens: usize,
    max_len: Option<usize>,
    ordinal: usize,
) -> anyhow::Result<()> {
    let gpu = Device::Cuda(ordinal);
    if !gpu.times_kernels()? {
        return Ok(());
    }
    gpu.take_kernel_times()?;
    if long.len() < model.info().context_length {
        let mut cache = whole_prompt_cache(model, Some(long.len() + 1), kv)?;
        forward(model, long, &mut cache, Logits::Last)?;
        let title = format!("GPU kernel time of a {}-token prompt", long.len());
        show_profile(&title, gpu, 1.0, "prompt")?;
    }
    let mut cache = whole_prompt_cache(model, max_len, kv)?;
    let mut token = argmax(&forward(model, short, &mut cache, Logits::Last)?.to_f32_vec()?);
    gpu.take_kernel_times()?;
    for _ in 0..gen_tokens {
        let logits = forward(model, &[token], &mut cache, Logits::Last)?;
        token = argmax(&logits.to_f32_vec()?);
    }
    show_profile(
        "GPU kernel time per eager token",
        gpu,
        gen_tokens as f64,
        "token",
    )
}

/// Prints the kernel times logged since the last call, divided by `per`.
pub(super) fn show_profile(title: &str, gpu: Device, per: f64, unit: &str) -> anyhow::Result<()> {
    let times = gpu.take_kernel_times()?;
    if times.is_empty() {
        return Ok(());
    }
    let total: f64 = times.iter().map(|t| t.millis).sum();
    let launches: usize = times.iter().map(|t| t.launches).sum();
    println!(
        "{title}: {:.3} ms in {:.0} launches ({})",
        total / per,
        launches as f64 / per,
        gpu.name()?
    );
    for t in &times {
        println!(
            "  {:<28} {:>9.1} us/{unit} {:>7.1} launches/{unit}",
            t.name,
            1e3 * t.millis / per,
            t.launches as f64 / per
        );
    }
    Ok(())
}
