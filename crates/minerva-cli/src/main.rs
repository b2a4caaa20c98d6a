//! `minerva`: chat with a local model, run one prompt, serve the OpenAI API, inspect a
//! checkpoint, benchmark.

mod bench;
mod chat;
mod config_file;
mod convert;
mod inspect;
mod ls;
mod model_path;
mod options;
mod perplexity;
mod pull;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{FromArgMatches, Parser, Subcommand};

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
    /// Defaults for these options and for `serve` (TOML) [default:
    /// ~/.config/minerva/minerva.toml where it exists]
    #[arg(long, global = true, env = "MINERVA_CONFIG")]
    config: Option<PathBuf>,
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
    /// Download a model from the Hugging Face hub into its cache (resumable, verified;
    /// HF_TOKEN and HF_ENDPOINT honoured), for --model ORG/NAME
    Pull(pull::PullArgs),
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
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if cli.verbose {
            tracing::Level::INFO
        } else {
            tracing::Level::WARN
        })
        .init();
    match run(cli, &matches) {
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

/// Fills the options `matches` left at their defaults from `config`.
fn apply_config(
    cli: &mut Cli,
    matches: &clap::ArgMatches,
    config: &config_file::ConfigFile,
) -> anyhow::Result<()> {
    let globals = config_file::Globals {
        model: &mut cli.model,
        device: &mut cli.device,
        kv_dtype: &mut cli.kv_dtype,
        graph: &mut cli.graph,
        threads: &mut cli.threads,
    };
    config.apply_globals(globals, matches)?;
    if let (Command::Serve(args), Some(serve)) =
        (&mut cli.command, matches.subcommand_matches("serve"))
    {
        config.apply_serve(args, serve);
    }
    Ok(())
}

fn run(mut cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let config = config_file::ConfigFile::load(cli.config.as_deref())?;
    apply_config(&mut cli, matches, &config)?;
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
        Command::Pull(args) => pull::pull(&args),
        Command::Ls(args) => ls::ls(&args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "minerva", &mut std::io::stdout());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file fills what the command line leaves at its defaults; flags win.
    #[test]
    fn flags_override_the_config_file_which_overrides_defaults() {
        let config: config_file::ConfigFile = toml::from_str(
            "device = \"cuda\"\nkv_dtype = \"int8\"\n[serve]\nport = 1\nhost = \"0.0.0.0\"\n",
        )
        .unwrap();
        let matches = <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(["minerva", "--device", "cpu", "serve", "--port", "9"])
            .unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        apply_config(&mut cli, &matches, &config).unwrap();
        assert_eq!(
            (cli.device.as_str(), cli.kv_dtype.as_str()),
            ("cpu", "int8")
        );
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(
            (args.host.as_str(), args.port, args.max_queue),
            ("0.0.0.0", 9, 64)
        );
    }
}
