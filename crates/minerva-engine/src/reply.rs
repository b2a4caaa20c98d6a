//! The assistant's reply as parts: reasoning, text for the user, tool calls — however the
//! model's chat format spells them.

use minerva_models::harmony::HarmonyReply;
use minerva_models::messages::ReplyEvent;

use crate::generate::SampledToken;

/// Reads generated tokens as they come (see [`Engine::reply`](crate::Engine::reply)).
pub enum Reply {
    /// Template-formatted models: all text is content.
    Plain,
    /// gpt-oss: harmony channels.
    Harmony(Box<HarmonyReply>),
}

impl Reply {
    /// The parts a newly sampled token completes.
    pub fn token(&mut self, token: &SampledToken) -> Vec<ReplyEvent> {
        match self {
            Reply::Plain => content(&token.text),
            Reply::Harmony(h) => h.push(token.id),
        }
    }

    /// The parts left when generation ends; `text` is the generation's held-back tail
    /// (`Step::Finished`'s text).
    pub fn finish(&mut self, text: &str) -> Vec<ReplyEvent> {
        match self {
            Reply::Plain => content(text),
            // Harmony reads tokens; the tail's tokens were already pushed.
            Reply::Harmony(h) => h.finish(),
        }
    }
}

fn content(text: &str) -> Vec<ReplyEvent> {
    match text {
        "" => Vec::new(),
        t => vec![ReplyEvent::Content(t.to_string())],
    }
}
