//! Minerva embedded in an application, the way a desktop app uses it: load a model with a
//! progress callback, generate a chat reply on a worker thread while the UI thread shows
//! each piece as it arrives, cancel from the UI thread, and unload.
//!
//! ```sh
//! cargo run --release -p minerva-embed-example -- "Why is the sky blue?"
//! cargo run --release -p minerva-embed-example -- --model ORG/NAME --cancel-after 5 "Hi"
//! ```
//!
//! `--model` takes a path or a name from `minerva ls` (default: the default model);
//! `--cancel-after N` stops the reply after N pieces, as a Stop button would;
//! `MINERVA_DEVICE` picks the device as for `minerva` (default: auto).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use minerva_engine::{Device, Engine, GenerateOptions, GenerationStats, Step};
use minerva_models::local_models::Caches;
use minerva_models::messages::{ChatMessage, ChatOptions, ReplyEvent};
use minerva_models::model_cache::default_model_path;

/// What the worker tells the UI thread.
enum Event {
    Reasoning(String),
    Text(String),
    Done(GenerationStats),
}

struct Args {
    model: Option<String>,
    cancel_after: Option<usize>,
    prompt: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut cancel_after, mut prompt) = (None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => model = Some(args.next().ok_or("--model needs a value")?),
            "--cancel-after" => {
                let n = args.next().ok_or("--cancel-after needs a number")?;
                cancel_after = Some(
                    n.parse()
                        .map_err(|_| format!("--cancel-after {n}: not a number"))?,
                );
            }
            _ if prompt.is_none() && !arg.starts_with("--") => prompt = Some(arg),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    Ok(Args {
        model,
        cancel_after,
        prompt: prompt.ok_or("usage: embed [--model M] [--cancel-after N] PROMPT")?,
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let path: PathBuf = match &args.model {
        Some(spec) => Caches::from_env().resolve(spec)?,
        None => default_model_path(),
    };

    // Load: weights are mapped at once; a GPU upload reports its progress.
    let device =
        Device::choose(&std::env::var("MINERVA_DEVICE").unwrap_or_else(|_| "auto".into()))?;
    let engine = Engine::load_on(&path, device, &mut |done, total| {
        eprint!("\rloading {} / {} MB", done >> 20, total >> 20);
    })?;
    eprintln!(
        "\rloaded {} on {device} in {:.0} ms",
        path.display(),
        engine.load_time().as_secs_f64() * 1e3
    );

    let prompt = engine.encode_chat(
        &[ChatMessage::new("user", &args.prompt)],
        &ChatOptions::default(),
    )?;
    let cancel = AtomicBool::new(false);
    let (events, received) = mpsc::channel::<Event>();

    std::thread::scope(|scope| -> Result<(), Box<dyn std::error::Error>> {
        // The worker: one generation, step by step, until it ends or the UI cancels.
        let worker = scope.spawn(|| -> Result<(), minerva_engine::EngineError> {
            let events = events;
            let mut session = engine.session(None)?;
            let mut reply = engine.reply();
            let options = GenerateOptions {
                max_tokens: 128,
                ..GenerateOptions::default()
            };
            session.start(&prompt, &options)?;
            let send = |parts: Vec<ReplyEvent>| {
                for part in parts {
                    let event = match part {
                        ReplyEvent::Reasoning(t) => Event::Reasoning(t),
                        ReplyEvent::Content(t) => Event::Text(t),
                        ReplyEvent::ToolCall(call) => {
                            Event::Text(format!("[tool call {}]", call.function.name))
                        }
                    };
                    // The UI went away: nothing left to show the reply to.
                    let _ = events.send(event);
                }
            };
            loop {
                if cancel.load(Ordering::Relaxed) {
                    let stats = session.cancel().expect("a generation is running");
                    let _ = events.send(Event::Done(stats));
                    return Ok(());
                }
                match session.step()? {
                    Step::Prefill { .. } => {}
                    Step::Token(token) => send(reply.token(&token)),
                    Step::Finished { text, stats } => {
                        send(reply.finish(&text));
                        let _ = events.send(Event::Done(stats));
                        return Ok(());
                    }
                }
            }
        });

        // The UI: show each piece as it comes; a Stop button would set `cancel`.
        let mut pieces = 0;
        let mut out = std::io::stdout();
        for event in received {
            match event {
                Event::Reasoning(t) => eprint!("{t}"),
                Event::Text(t) => {
                    write!(out, "{t}")?;
                    out.flush()?;
                    pieces += 1;
                    if args.cancel_after == Some(pieces) {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                Event::Done(stats) => {
                    writeln!(out)?;
                    eprintln!(
                        "{} tokens, {:.1} tok/s, finished: {:?}",
                        stats.generated_tokens,
                        stats.decode_tok_s(),
                        stats.finish
                    );
                }
            }
        }
        worker.join().expect("the worker does not panic")?;
        Ok(())
    })?;

    // Unload: dropping the engine frees its weights (host maps and GPU memory).
    drop(engine);
    eprintln!("unloaded");
    Ok(())
}
