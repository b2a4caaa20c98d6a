//! `minerva chat` and `minerva run`: stream answers to stdout.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use clap::Args;
use clap::ValueEnum;
use minerva_engine::{Engine, GenerateOptions, GenerationStats, Reply, Session, Step};
use minerva_models::messages::{today_utc, ChatMessage, ChatOptions, Effort, ReplyEvent};

use crate::model_path::ModelChoice;
use crate::options::GenerationArgs;

#[derive(Args)]
pub struct ChatArgs {
    /// System prompt [default: the model template's own]
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub reasoning: ReasoningArgs,
    #[command(flatten)]
    pub gen: GenerationArgs,
}

/// How a reasoning model (gpt-oss) thinks, and whether you see it.
#[derive(Args)]
pub struct ReasoningArgs {
    /// Reasoning effort: low, medium or high
    #[arg(long, default_value = "medium", value_parser = parse_effort)]
    pub reasoning_effort: Effort,
    /// Show the model's reasoning dimmed (faint on a terminal), in plain text, or not at all
    #[arg(long, value_enum, default_value_t = ShowReasoning::Dim)]
    pub reasoning: ShowReasoning,
}

fn parse_effort(s: &str) -> Result<Effort, String> {
    s.parse()
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowReasoning {
    Dim,
    Show,
    Hide,
}

impl ReasoningArgs {
    fn chat_options(&self) -> ChatOptions {
        ChatOptions {
            effort: self.reasoning_effort,
            tools: Vec::new(),
            date: Some(today_utc()),
        }
    }
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
    pub reasoning: ReasoningArgs,
    #[command(flatten)]
    pub gen: GenerationArgs,
}

fn load(choice: &ModelChoice) -> anyhow::Result<Engine> {
    choice.load_engine()
}

fn message(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

/// Writes a reply to stdout as it is generated: the answer as is, the reasoning as `show`
/// says, tool calls as one line each.
struct ReplyPrinter<W: Write> {
    out: W,
    show: ShowReasoning,
    faint: bool,
    in_reasoning: bool,
    /// What goes into the conversation's history.
    answer: ChatMessage,
}

const FAINT: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl<W: Write> ReplyPrinter<W> {
    fn print(&mut self, event: ReplyEvent) -> std::io::Result<()> {
        match event {
            ReplyEvent::Reasoning(text) => {
                if self.show == ShowReasoning::Hide {
                    return Ok(());
                }
                if !self.in_reasoning && self.faint {
                    self.out.write_all(FAINT.as_bytes())?;
                }
                self.in_reasoning = true;
                self.out.write_all(text.as_bytes())?;
            }
            ReplyEvent::Content(text) => {
                self.end_reasoning()?;
                self.out.write_all(text.as_bytes())?;
                self.answer.content.push_str(&text);
            }
            ReplyEvent::ToolCall(call) => {
                self.end_reasoning()?;
                let f = &call.function;
                writeln!(self.out, "[tool call] {}({})", f.name, f.arguments)?;
                self.answer.tool_calls.push(call);
            }
        }
        self.out.flush()
    }

    fn end_reasoning(&mut self) -> std::io::Result<()> {
        if self.in_reasoning {
            self.in_reasoning = false;
            if self.faint {
                self.out.write_all(RESET.as_bytes())?;
            }
            self.out.write_all(b"\n\n")?;
        }
        Ok(())
    }
}

/// Generates from `prompt`, streaming to stdout; returns the assistant's message.
fn stream_answer(
    session: &mut Session<'_>,
    mut reply: Reply,
    prompt: &[u32],
    options: &GenerateOptions,
    show: ShowReasoning,
) -> anyhow::Result<ChatMessage> {
    let stdout = std::io::stdout();
    let faint = show == ShowReasoning::Dim && stdout.is_terminal();
    let mut printer = ReplyPrinter {
        out: stdout.lock(),
        show,
        faint,
        in_reasoning: false,
        answer: message("assistant", ""),
    };
    session.start(prompt, options)?;
    let stats = loop {
        let events = match session.step()? {
            Step::Prefill { .. } => continue,
            Step::Token(token) => reply.token(&token),
            Step::Finished { text, stats } => {
                for event in reply.finish(&text) {
                    printer.print(event).context("writing to stdout")?;
                }
                break stats;
            }
        };
        for event in events {
            if let Err(e) = printer.print(event) {
                session.cancel();
                return Err(e).context("writing to stdout");
            }
        }
    };
    printer.end_reasoning()?;
    writeln!(printer.out)?;
    log_stats(&stats);
    Ok(printer.answer)
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

pub fn run(model: &ModelChoice, args: &RunArgs) -> anyhow::Result<()> {
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
        engine.encode_chat(&messages, &args.reasoning.chat_options())?
    };
    let mut session = engine.session(args.gen.context)?;
    let reply = match args.raw {
        true => Reply::Plain,
        false => engine.reply(),
    };
    stream_answer(
        &mut session,
        reply,
        &prompt,
        &options,
        args.reasoning.reasoning,
    )?;
    Ok(())
}

pub fn chat(model: &ModelChoice, args: &ChatArgs) -> anyhow::Result<()> {
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
        let prompt = engine.encode_chat(&history, &args.reasoning.chat_options())?;
        let answer = stream_answer(
            &mut session,
            engine.reply(),
            &prompt,
            &options,
            args.reasoning.reasoning,
        )?;
        history.push(answer);
    }
    Ok(())
}
