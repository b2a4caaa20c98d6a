//! The assistant's harmony reply, parsed token by token into reasoning, answer text and
//! tool calls.

use openai_harmony::chat::{Content, Message, Role};
use openai_harmony::{HarmonyEncoding, StreamableParser};

use crate::messages::{ReplyEvent, ToolCall};

/// Parses the tokens generated after a harmony prompt.
///
/// A model may stray from the format (a small or random model often does); from the first
/// token the parser rejects, the rest is passed on as plain content, so no text is lost.
pub struct HarmonyReply {
    parser: Option<StreamableParser>,
    encoding: HarmonyEncoding,
    /// Messages of the parser already turned into events.
    seen: usize,
    /// Bytes of a character split across tokens (plain-content mode).
    pending: Vec<u8>,
    calls: usize,
    call_prefix: String,
}

impl HarmonyReply {
    pub(super) fn new(encoding: HarmonyEncoding) -> Self {
        let parser = StreamableParser::new(encoding.clone(), Some(Role::Assistant)).ok();
        HarmonyReply {
            parser,
            encoding,
            seen: 0,
            pending: Vec::new(),
            calls: 0,
            call_prefix: call_id_prefix(),
        }
    }

    /// Takes one generated token.
    pub fn push(&mut self, token: u32) -> Vec<ReplyEvent> {
        let Some(parser) = self.parser.as_mut() else {
            return self.plain(token);
        };
        if parser.process(token).is_err() {
            self.parser = None;
            return self.plain(token);
        }
        if header_tokens(parser).is_some_and(|h| h.len() > MAX_HEADER_TOKENS) {
            // No header is this long: the model is writing plain text.
            let stray = header_tokens(parser).unwrap_or_default();
            self.parser = None;
            return stray.into_iter().flat_map(|t| self.plain(t)).collect();
        }
        let mut events = Vec::new();
        if let Ok(Some(delta)) = parser.last_content_delta() {
            if !delta.is_empty() {
                let to_tool = parser.current_recipient().is_some_and(|r| r != "assistant");
                match parser.current_channel().as_deref() {
                    Some("analysis") => events.push(ReplyEvent::Reasoning(delta)),
                    _ if to_tool => {} // arguments arrive whole with the finished call
                    _ => events.push(ReplyEvent::Content(delta)),
                }
            }
        }
        self.take_calls(&mut events);
        events
    }

    /// Ends the reply (the generation stopped); a message cut short is closed.
    pub fn finish(&mut self) -> Vec<ReplyEvent> {
        let mut events = Vec::new();
        if let Some(parser) = self.parser.as_mut() {
            let stray = header_tokens(parser).unwrap_or_default();
            if parser.process_eos().is_ok() {
                self.take_calls(&mut events);
            } else {
                // Ended inside a header: what looked like one was plain text.
                self.parser = None;
                for t in stray {
                    events.extend(self.plain(t));
                }
            }
        }
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            events.push(ReplyEvent::Content(text));
        }
        events
    }

    /// Tool calls among the messages the parser finished since the last look.
    fn take_calls(&mut self, events: &mut Vec<ReplyEvent>) {
        let Some(parser) = self.parser.as_ref() else {
            return;
        };
        let finished: Vec<Message> = parser.messages()[self.seen..].to_vec();
        self.seen += finished.len();
        for message in finished {
            let Some(name) = message
                .recipient
                .as_deref()
                .and_then(|r| r.strip_prefix("functions."))
            else {
                continue;
            };
            let arguments: String = message
                .content
                .iter()
                .filter_map(|c| match c {
                    Content::Text(t) => Some(t.text.as_str()),
                    _ => None,
                })
                .collect();
            self.calls += 1;
            let id = format!("{}{}", self.call_prefix, self.calls);
            events.push(ReplyEvent::ToolCall(ToolCall::function(
                id,
                name,
                arguments.trim(),
            )));
        }
    }

    /// Plain-content mode: the token's text, whole characters only.
    fn plain(&mut self, token: u32) -> Vec<ReplyEvent> {
        match self.encoding.tokenizer().decode_bytes([token]) {
            Ok(bytes) => self.pending.extend_from_slice(&bytes),
            Err(_) => self.pending.extend_from_slice("\u{FFFD}".as_bytes()),
        }
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                // Not UTF-8 and never will be: show it replaced rather than stall.
                let text = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return vec![ReplyEvent::Content(text)];
            }
        };
        let text: Vec<u8> = self.pending.drain(..valid).collect();
        match String::from_utf8(text) {
            Ok(text) if !text.is_empty() => vec![ReplyEvent::Content(text)],
            _ => Vec::new(),
        }
    }
}

/// Longer than any real message header (`<|channel|>commentary to=functions.NAME
/// <|constrain|>json` is about ten tokens).
const MAX_HEADER_TOKENS: usize = 48;

/// The tokens of the message header being read, if the parser is reading one.
fn header_tokens(parser: &StreamableParser) -> Option<Vec<u32>> {
    #[derive(serde::Deserialize)]
    struct State {
        state: String,
        #[serde(default)]
        header_tokens: Vec<u32>,
    }
    let state: State = serde_json::from_str(&parser.state_json().ok()?).ok()?;
    (state.state == "Header").then_some(state.header_tokens)
}

/// Tool-call ids must be unique within a conversation: a random prefix per reply.
fn call_id_prefix() -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one(std::time::SystemTime::now());
    format!("call_{:012x}_", n & 0xffff_ffff_ffff)
}
