//! gpt-oss's chat format, harmony, through OpenAI's `openai-harmony` crate: OpenAI-style
//! messages in, prompt tokens out; generated tokens in, reasoning / answer / tool calls out.
//!
//! A harmony conversation starts with a system message (model identity, knowledge cutoff,
//! reasoning effort, valid channels) and, when there are instructions or function tools, a
//! developer message; OpenAI `system` messages become the developer's instructions, as the
//! model card prescribes. The assistant answers in channels: `analysis` (reasoning),
//! `commentary` (tool calls addressed `to=functions.NAME`, or preambles) and `final`.

mod reply;
mod vocab;

use std::collections::HashMap;

use openai_harmony::chat::{
    Author, DeveloperContent, Message, ReasoningEffort, Role, SystemContent, ToolDescription,
};
use openai_harmony::{load_harmony_encoding, HarmonyEncoding, HarmonyEncodingName};

use crate::error::{ModelError, Result};
use crate::messages::{ChatMessage, ChatOptions, Effort};
pub use reply::HarmonyReply;

impl From<Effort> for ReasoningEffort {
    fn from(e: Effort) -> Self {
        match e {
            Effort::Low => ReasoningEffort::Low,
            Effort::Medium => ReasoningEffort::Medium,
            Effort::High => ReasoningEffort::High,
        }
    }
}

/// The harmony encoding of gpt-oss (o200k_harmony tokens).
#[derive(Clone)]
pub struct Harmony {
    encoding: HarmonyEncoding,
}

impl std::fmt::Debug for Harmony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Harmony")
    }
}

fn harmony_error(e: impl std::fmt::Display) -> ModelError {
    ModelError::Harmony(e.to_string())
}

impl Harmony {
    /// Loads the encoding from the local vocabulary (no network; see `vocab`).
    pub fn load() -> Result<Harmony> {
        vocab::ensure().map_err(harmony_error)?;
        let encoding =
            load_harmony_encoding(HarmonyEncodingName::HarmonyGptOss).map_err(harmony_error)?;
        Ok(Harmony { encoding })
    }

    /// Prompt tokens for `messages`, ending with the assistant's turn opened
    /// (`<|start|>assistant`).
    pub fn render(&self, messages: &[ChatMessage], options: &ChatOptions) -> Result<Vec<u32>> {
        let conversation = to_harmony(messages, options)?;
        self.encoding
            .render_conversation_for_completion(&conversation, Role::Assistant, None)
            .map_err(harmony_error)
    }

    /// A parser for the assistant's reply to a prompt from [`render`](Self::render).
    pub fn reply(&self) -> HarmonyReply {
        HarmonyReply::new(self.encoding.clone())
    }

    /// The tokens that end the assistant's turn: `<|return|>` (done) and `<|call|>` (a tool
    /// call awaits its result). `<|end|>` only ends one message of the turn.
    pub fn stop_tokens(&self) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self
            .encoding
            .stop_tokens_for_assistant_actions()
            .map_err(harmony_error)?
            .into_iter()
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Tokens of `text` with harmony's markup tokens recognized (for tests and tools).
    pub fn encode_with_specials(&self, text: &str) -> Vec<u32> {
        self.encoding.tokenizer().encode_with_special_tokens(text)
    }

    /// The bytes token `id` stands for (a markup token: its text).
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        self.encoding
            .tokenizer()
            .decode_bytes([id])
            .map_err(harmony_error)
    }

    /// Text of `tokens`, markup tokens included.
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        self.encoding
            .tokenizer()
            .decode_utf8(tokens)
            .map_err(harmony_error)
    }
}

/// The conversation in harmony's terms.
fn to_harmony(messages: &[ChatMessage], options: &ChatOptions) -> Result<Vec<Message>> {
    let mut system = SystemContent::new().with_reasoning_effort(options.effort.into());
    if let Some(date) = &options.date {
        system = system.with_conversation_start_date(date.clone());
    }
    let mut out = vec![Message::from_role_and_content(Role::System, system)];
    let instructions: Vec<&str> = messages
        .iter()
        .filter(|m| matches!(m.role.as_str(), "system" | "developer"))
        .map(|m| m.content.as_str())
        .collect();
    if !instructions.is_empty() || !options.tools.is_empty() {
        let mut developer = DeveloperContent::new();
        if !instructions.is_empty() {
            developer = developer.with_instructions(instructions.join("\n\n"));
        }
        if !options.tools.is_empty() {
            let tools = options.tools.iter().map(|t| {
                ToolDescription::new(t.name.clone(), t.description.clone(), t.parameters.clone())
            });
            developer = developer.with_function_tools(tools.collect());
        }
        out.push(Message::from_role_and_content(Role::Developer, developer));
    }
    // Tool results name their call by id; harmony addresses them by function name.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" => {}
            "user" => out.push(Message::from_role_and_content(
                Role::User,
                m.content.clone(),
            )),
            "assistant" => {
                let channel = if m.tool_calls.is_empty() {
                    "final"
                } else {
                    "commentary"
                };
                if !m.content.is_empty() || m.tool_calls.is_empty() {
                    out.push(
                        Message::from_role_and_content(Role::Assistant, m.content.clone())
                            .with_channel(channel),
                    );
                }
                for call in &m.tool_calls {
                    call_names.insert(&call.id, &call.function.name);
                    out.push(
                        Message::from_role_and_content(
                            Role::Assistant,
                            call.function.arguments.clone(),
                        )
                        .with_channel("commentary")
                        .with_recipient(format!("functions.{}", call.function.name))
                        .with_content_type("<|constrain|>json"),
                    );
                }
            }
            "tool" => {
                let name = m
                    .name
                    .as_deref()
                    .or_else(|| {
                        let id = m.tool_call_id.as_deref()?;
                        call_names.get(id).copied()
                    })
                    .ok_or_else(|| {
                        harmony_error(format!(
                            "messages[{i}]: a tool message needs the name of its function or \
                             the tool_call_id of an earlier assistant tool call"
                        ))
                    })?;
                out.push(
                    Message::from_author_and_content(
                        Author::new(Role::Tool, format!("functions.{name}")),
                        m.content.clone(),
                    )
                    .with_channel("commentary")
                    .with_recipient("assistant"),
                );
            }
            other => {
                return Err(harmony_error(format!(
                    "messages[{i}]: role '{other}' is not one of system, developer, user, \
                     assistant, tool"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
