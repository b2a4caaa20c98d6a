//! Writes a synthetic gpt-oss-20b checkpoint (exact published layout, random valid values)
//! for load, memory and speed tests at true scale. See `minerva_models::synthetic`.
//!
//! ```sh
//! cargo run --release -p minerva-models --example synth_gpt_oss -- --layout openai --out /tmp/gpt-oss-20b
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use minerva_models::synthetic::{self, Fill, GptOssDims, Layout};

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    /// openai/gpt-oss-20b as published: 459 tensors, MXFP4 experts, bf16 elsewhere
    Openai,
    /// mlx_lm.convert's MXFP4-Q8: 775 tensors, mxfp4 experts, 8-bit affine elsewhere
    Mlx,
}

#[derive(Clone, Copy, ValueEnum)]
enum FillArg {
    Random,
    /// Sparse all-zero files: instant, true sizes, no disk used
    Zeros,
}

#[derive(Parser)]
#[command(about = "Write a synthetic gpt-oss-20b checkpoint with the exact published layout")]
struct Args {
    #[arg(long, value_enum)]
    layout: LayoutArg,
    /// Output directory (created; existing files of the same names are overwritten)
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "random")]
    fill: FillArg,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fewer layers than the real 24 (same shapes otherwise)
    #[arg(long)]
    layers: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dims = GptOssDims {
        layers: args.layers.unwrap_or(GptOssDims::GPT_OSS_20B.layers),
        ..GptOssDims::GPT_OSS_20B
    };
    let layout = match args.layout {
        LayoutArg::Openai => Layout::OpenAi,
        LayoutArg::Mlx => Layout::Mlx,
    };
    let fill = match args.fill {
        FillArg::Random => Fill::Random { seed: args.seed },
        FillArg::Zeros => Fill::Zeros,
    };
    let spec = match synthetic::gpt_oss(layout, &dims) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("synth_gpt_oss: {e}");
            return ExitCode::FAILURE;
        }
    };
    let total = spec.total_bytes();
    let tensors = spec.tensors().count();
    eprintln!(
        "writing {tensors} tensors, {:.2} GB in {} shard(s) to {}",
        total as f64 / 1e9,
        spec.shards.len(),
        args.out.display()
    );
    let start = Instant::now();
    let mut last_report = 0u64;
    let result = synthetic::write(&spec, &args.out, fill, |done| {
        if done >= last_report + (1 << 30) || done == total {
            last_report = done;
            eprint!("\r  {:5.1}%", 100.0 * done as f64 / total.max(1) as f64);
            let _ = std::io::stderr().flush();
        }
    });
    match result {
        Ok(files) => {
            let secs = start.elapsed().as_secs_f64();
            eprintln!();
            for f in &files {
                println!("{}", f.display());
            }
            eprintln!(
                "done in {secs:.1} s ({:.2} GB/s)",
                total as f64 / 1e9 / secs.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nsynth_gpt_oss: {e}");
            ExitCode::FAILURE
        }
    }
}
