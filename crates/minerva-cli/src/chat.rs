//! `minerva chat` and `minerva run`: stream answers to stdout.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use minerva_engine::{Engine, GenerateOptions, GenerationStats, Session};
use minerva_models::chat_template::ChatMessage;

use crate::model_path;
use crate::options::GenerationArgs;

#[derive(Args)]
pub struct ChatArgs {
    /// System prompt [default: the model template's own]
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub gen: GenerationArgs,
}

#[derive(Args)]
pub struct RunArgs {
    /// The prompt
    #[arg(long, short)]
    pub prompt: String,
    /// System prompt [default: the model template's own]
    #[arg(long)]
    pub system: Option<String>,
    /// Send the prompt as raw text, without the chat template
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub gen: GenerationArgs,
}

fn load(model: Option<&Path>) -> anyhow::Result<Engine> {
    let path = model_path::resolve(model)?;
    let engine = Engine::load(&path)?;
    tracing::info!(
        "loaded {} in {:.0} ms",
        path.display(),
        engine.load_time().as_secs_f64() * 1e3
    );
    Ok(engine)
}

fn message(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

/// Generates from `prompt`, streaming to stdout; returns the answer text.
fn stream_answer(
    session: &mut Session<'_>,
    prompt: &[u32],
    options: &GenerateOptions,
) -> anyhow::Result<String> {
    let mut answer = String::new();
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let stats = session.generate(prompt, options, |text| {
        answer.push_str(text);
        match stdout
            .write_all(text.as_bytes())
            .and_then(|_| stdout.flush())
        {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    writeln!(stdout)?;
    log_stats(&stats);
    Ok(answer)
}

fn log_stats(s: &GenerationStats) {
    tracing::info!(
        "prompt {} tokens ({} reused) at {:.1} tok/s; {} generated at {:.1} tok/s; finish: {:?}",
        s.prompt_tokens,
        s.reused_tokens,
        s.prefill_tok_s(),
        s.generated_tokens,
        s.decode_tok_s(),
        s.finish
    );
}

pub fn run(model: Option<&Path>, args: &RunArgs) -> anyhow::Result<()> {
    let options = args.gen.options()?;
    let engine = load(model)?;
    let prompt = if args.raw {
        engine.encode_raw(&args.prompt)?
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(message("system", system));
        }
        messages.push(message("user", &args.prompt));
        engine.encode_chat(&messages)?
    };
    let mut session = engine.session(args.gen.context)?;
    stream_answer(&mut session, &prompt, &options)?;
    Ok(())
}

pub fn chat(model: Option<&Path>, args: &ChatArgs) -> anyhow::Result<()> {
    let options = args.gen.options()?;
    let engine = load(model)?;
    let mut session = engine.session(args.gen.context)?;
    let interactive = std::io::stdin().is_terminal();
    let fresh = || {
        args.system
            .iter()
            .map(|s| message("system", s))
            .collect::<Vec<_>>()
    };
    let mut history = fresh();
    if interactive {
        eprintln!(
            "Chatting with {:?}. /reset clears the history, /exit (or Ctrl-D) quits.",
            engine.files()
        );
    }
    let stdin = std::io::stdin().lock();
    let mut lines = stdin.lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = fresh();
                continue;
            }
            _ => {}
        }
        history.push(message("user", text));
        let prompt = engine.encode_chat(&history)?;
        let answer = stream_answer(&mut session, &prompt, &options)?;
        history.push(message("assistant", &answer));
    }
    Ok(())
}
