//! `minerva`: chat with a local model, run one prompt, serve the OpenAI API, inspect a
//! checkpoint, benchmark.

mod bench;
mod chat;
mod convert;
mod inspect;
mod ls;
mod model_path;
mod options;
mod perplexity;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "minerva",
    version,
    about = "Minerva: a native Rust LLM inference engine"
)]
struct Cli {
    /// Model: a GGUF file, a safetensors file, a model directory, `ORG/NAME[@REV][/FILE]` from
    /// the Hugging Face cache, or a name `minerva ls` lists [default: SmolLM2-135M-Instruct Q4_1]
    #[arg(long, global = true, env = "MINERVA_MODEL")]
    model: Option<PathBuf>,
    /// Where to run: auto (the first GPU if one works, else the CPU), cpu, cuda or cuda:N
    #[arg(long, global = true, env = "MINERVA_DEVICE", default_value = "auto")]
    device: String,
    /// How the KV cache stores keys and values: f16, f32, int8 (8-bit codes, a scale per
    /// position and head), int4, or keys/values apart: int8/int4 (4-bit values, 8-bit keys)
    #[arg(long, global = true, env = "MINERVA_KV_DTYPE", default_value = "f16")]
    kv_dtype: String,
    /// Lazy compute graph: on (elementwise ops record, fuse and run when read) or off (each
    /// op runs as it is called)
    #[arg(long, global = true, env = "MINERVA_GRAPH", default_value = "on", value_parser = ["on", "off"])]
    graph: String,
    /// Worker threads [default: one per CPU]
    #[arg(long, global = true, env = "MINERVA_THREADS")]
    threads: Option<usize>,
    /// Log progress and timings to stderr
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Interactive chat: type a message, get a streamed answer; history is kept (/reset, /exit)
    Chat(chat::ChatArgs),
    /// Answer one prompt (through the chat template unless --raw) and exit
    Run(chat::RunArgs),
    /// Serve the OpenAI-compatible API and a web chat page
    Serve(serve::ServeArgs),
    /// Show a checkpoint's metadata, tensors and config
    Inspect(inspect::InspectArgs),
    /// Measure prefill and decode speed
    Bench(bench::BenchArgs),
    /// Perplexity of a text file under the model (llama.cpp's method)
    Perplexity(perplexity::PerplexityArgs),
    /// Convert an HF safetensors checkpoint (--model) to MLX format, quantized as mlx does
    Convert(convert::ConvertArgs),
    /// List the models --model finds by name (Minerva's cache, the Hugging Face cache)
    Ls(ls::LsArgs),
    /// Print a shell completion script (e.g. `minerva completions bash > ~/.local/share/bash-completion/completions/minerva`)
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    // Output piped into a program that stops reading (`minerva inspect | head`) ends the
    // process quietly, as for other Unix tools, instead of a panic in `println!`.
    // SAFETY: restoring SIGPIPE's default action before any thread starts touches no
    // state of this program.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if cli.verbose {
            tracing::Level::INFO
        } else {
            tracing::Level::WARN
        })
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("minerva: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes the message already quotes.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
    }
    line.replace('\n', " ")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    minerva_core::graph::set_lazy(cli.graph == "on");
    if let Some(threads) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build_global()?;
    }
    let choice = model_path::ModelChoice {
        model: cli.model,
        device: cli.device,
        kv_dtype: cli.kv_dtype,
    };
    let model = choice.model.as_deref();
    match cli.command {
        Command::Chat(args) => chat::chat(&choice, &args),
        Command::Run(args) => chat::run(&choice, &args),
        Command::Serve(args) => serve::serve(&choice, &args),
        Command::Inspect(args) => inspect::inspect(model, &args),
        Command::Bench(args) => bench::bench(&choice, &args),
        Command::Perplexity(args) => perplexity::perplexity(&choice, &args),
        Command::Convert(args) => convert::convert(model, &args),
        Command::Ls(args) => ls::ls(&args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "minerva", &mut std::io::stdout());
            Ok(())
        }
    }
}
