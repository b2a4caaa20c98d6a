//! Turning generation events into OpenAI responses: one JSON body, or a stream of chunks as
//! server-sent events ending with `data: [DONE]`. Chat and completions differ only in the
//! shape of a choice, which [`Endpoint`] knows.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use minerva_engine::reply::Reply as ReplyParser;
use minerva_engine::{Engine, FinishReason, SampledToken, TokenLogprobs};
use minerva_models::messages::{ReplyEvent, ToolCall};
use serde_json::{json, Map, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::ApiError;
use crate::request::Plan;
use crate::scheduler::{Event, Events};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// What a response needs besides the events.
pub struct Reply {
    pub endpoint: Endpoint,
    pub model: String,
    pub engine: Arc<Engine>,
    /// Prompt tokens over all prompts (counted once however many choices each has).
    pub prompt_tokens: usize,
    /// Per choice: text to put before the completion (completions' `echo`).
    pub echo: Vec<Option<String>>,
    /// Whether the request asked for log-probabilities.
    pub logprobs: bool,
    /// Shared by every chunk of a stream.
    pub id: String,
}

/// A fresh response id (the part after `chatcmpl-` / `cmpl-`).
pub fn response_id() -> String {
    format!("{:024x}", rand::random::<u128>() >> 32)
}

/// One choice's output (with log-probabilities when asked for) not yet sent.
struct Pending {
    /// Reads the generated tokens as the model's chat format spells replies.
    parser: ReplyParser,
    text: String,
    /// The model's reasoning (chat: `reasoning_content`).
    reasoning: String,
    tool_calls: Vec<ToolCall>,
    /// Tool calls sent in earlier chunks (a streamed call's `index` counts on from here).
    calls_sent: usize,
    logprobs: Vec<(u32, TokenLogprobs)>,
    /// Bytes of completion text before `text` (completions' `text_offset`).
    offset: usize,
}

impl Pending {
    fn token(&mut self, token: SampledToken) {
        for event in self.parser.token(&token) {
            self.apply(event);
        }
        self.logprobs
            .extend(token.logprobs.map(|lp| (token.id, lp)));
    }

    fn finish(&mut self, text: &str) {
        for event in self.parser.finish(text) {
            self.apply(event);
        }
    }

    fn apply(&mut self, event: ReplyEvent) {
        match event {
            ReplyEvent::Reasoning(text) => self.reasoning.push_str(&text),
            ReplyEvent::Content(text) => self.text.push_str(&text),
            ReplyEvent::ToolCall(call) => self.tool_calls.push(call),
        }
    }

    fn has_news(&self) -> bool {
        !(self.text.is_empty() && self.reasoning.is_empty() && self.tool_calls.is_empty())
    }

    fn called_tools(&self) -> bool {
        self.calls_sent + self.tool_calls.len() > 0
    }
}

impl Reply {
    pub async fn respond(self, plan: &Plan, receivers: Vec<Events>) -> Response {
        if plan.stream {
            let include_usage = plan.include_usage;
            Sse::new(self.stream(receivers, include_usage)).into_response()
        } else {
            match self.collect(receivers).await {
                Ok(body) => Json(body).into_response(),
                Err(err) => err.into_response(),
            }
        }
    }

    fn pending(&self) -> Pending {
        Pending {
            parser: match self.endpoint {
                Endpoint::Chat => self.engine.reply(),
                Endpoint::Completion => ReplyParser::Plain,
            },
            text: String::new(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
            calls_sent: 0,
            logprobs: Vec::new(),
            offset: 0,
        }
    }

    async fn collect(self, receivers: Vec<Events>) -> Result<Value, ApiError> {
        let mut choices: Vec<(Pending, Option<FinishReason>)> =
            receivers.iter().map(|_| (self.pending(), None)).collect();
        let mut generated = 0;
        let mut events = merge(receivers);
        while let Some((i, event)) = events.next().await {
            let (pending, finish) = &mut choices[i];
            match event {
                Event::Token(t) => pending.token(t),
                Event::Finished { text, stats } => {
                    pending.finish(&text);
                    generated += stats.generated_tokens;
                    *finish = Some(stats.finish);
                }
                Event::Failed(message) => return Err(ApiError::internal(message)),
            }
        }
        let choices: Vec<Value> = choices
            .into_iter()
            .enumerate()
            .map(|(i, (mut pending, finish))| {
                if let Some(echo) = &self.echo[i] {
                    pending.text.insert_str(0, echo);
                    pending.offset = echo.len();
                }
                self.choice(i, &pending, finish, false, false)
            })
            .collect();
        let mut body = self.envelope(false);
        body["choices"] = Value::Array(choices);
        body["usage"] = self.usage(generated);
        Ok(body)
    }

    fn stream(
        self,
        receivers: Vec<Events>,
        include_usage: bool,
    ) -> impl Stream<Item = Result<SseEvent, Infallible>> {
        async_stream::stream! {
            let n = receivers.len();
            let mut pending: Vec<Pending> = (0..n).map(|_| self.pending()).collect();
            let mut generated = 0;
            // The first chunk of each choice opens it (chat: the assistant role; completions:
            // the echoed prompt).
            for (i, choice) in pending.iter_mut().enumerate() {
                if let Some(echo) = &self.echo[i] {
                    choice.text.push_str(echo);
                }
                yield Ok(self.chunk(i, choice, None, true, include_usage));
            }
            let mut events = merge(receivers);
            while let Some((i, event)) = events.next().await {
                match event {
                    Event::Token(t) => {
                        pending[i].token(t);
                        if pending[i].has_news() {
                            yield Ok(self.chunk(i, &mut pending[i], None, false, include_usage));
                        }
                    }
                    Event::Finished { text, stats } => {
                        pending[i].finish(&text);
                        generated += stats.generated_tokens;
                        let finish = Some(stats.finish);
                        yield Ok(self.chunk(i, &mut pending[i], finish, false, include_usage));
                    }
                    Event::Failed(message) => {
                        yield Ok(SseEvent::default().data(ApiError::internal(message).body().to_string()));
                        return;
                    }
                }
            }
            if include_usage {
                let mut last = self.envelope(true);
                last["choices"] = json!([]);
                last["usage"] = self.usage(generated);
                yield Ok(SseEvent::default().data(last.to_string()));
            }
            yield Ok(SseEvent::default().data("[DONE]"));
        }
    }

    /// A streamed chunk carrying `pending` (which it empties).
    fn chunk(
        &self,
        index: usize,
        pending: &mut Pending,
        finish: Option<FinishReason>,
        first: bool,
        include_usage: bool,
    ) -> SseEvent {
        let mut body = self.envelope(true);
        body["choices"] = json!([self.choice(index, pending, finish, true, first)]);
        if include_usage {
            body["usage"] = Value::Null;
        }
        pending.offset += pending.text.len();
        pending.text.clear();
        pending.reasoning.clear();
        pending.calls_sent += pending.tool_calls.len();
        pending.tool_calls.clear();
        pending.logprobs.clear();
        SseEvent::default().data(body.to_string())
    }

    fn envelope(&self, chunk: bool) -> Value {
        let (prefix, object) = match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => ("chatcmpl", "chat.completion"),
            (Endpoint::Chat, true) => ("chatcmpl", "chat.completion.chunk"),
            (Endpoint::Completion, _) => ("cmpl", "text_completion"),
        };
        json!({
            "id": format!("{prefix}-{}", self.id),
            "object": object,
            "created": created(),
            "model": self.model,
            "system_fingerprint": concat!("minerva-", env!("CARGO_PKG_VERSION")),
        })
    }

    fn choice(
        &self,
        index: usize,
        pending: &Pending,
        finish: Option<FinishReason>,
        chunk: bool,
        first: bool,
    ) -> Value {
        let finish_reason = finish.map(|f| match f {
            FinishReason::EndOfText if pending.called_tools() => "tool_calls",
            f => finish_reason(f),
        });
        match self.endpoint {
            Endpoint::Chat => {
                let logprobs = self.logprobs.then(|| {
                    json!({"content": pending.logprobs.iter().map(|(id, lp)| self.chat_logprob(*id, lp)).collect::<Vec<_>>()})
                });
                let mut message = Map::new();
                if !chunk || first {
                    message.insert("role".into(), "assistant".into());
                }
                let calls = !pending.tool_calls.is_empty();
                if !chunk || first || !pending.text.is_empty() {
                    let content = match pending.text.is_empty() && calls && !chunk {
                        true => Value::Null, // OpenAI: a message that only calls has no content
                        false => pending.text.clone().into(),
                    };
                    message.insert("content".into(), content);
                }
                if !pending.reasoning.is_empty() {
                    message.insert("reasoning_content".into(), pending.reasoning.clone().into());
                }
                if calls {
                    let calls = pending.tool_calls.iter().enumerate().map(|(k, call)| {
                        let mut call = json!(call);
                        if chunk {
                            call["index"] = json!(pending.calls_sent + k);
                        }
                        call
                    });
                    message.insert("tool_calls".into(), calls.collect());
                }
                if !chunk {
                    message.insert("refusal".into(), Value::Null);
                }
                let key = if chunk { "delta" } else { "message" };
                json!({"index": index, key: message, "logprobs": logprobs, "finish_reason": finish_reason})
            }
            Endpoint::Completion => {
                let logprobs = self.logprobs.then(|| self.completion_logprobs(pending));
                json!({"index": index, "text": pending.text, "logprobs": logprobs, "finish_reason": finish_reason})
            }
        }
    }

    fn usage(&self, generated: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": generated,
            "total_tokens": self.prompt_tokens + generated,
        })
    }

    fn token_text(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = self
            .engine
            .tokenizer()
            .token_bytes(id)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    fn chat_logprob(&self, id: u32, lp: &TokenLogprobs) -> Value {
        let entry = |id: u32, logprob: f32| {
            let (token, bytes) = self.token_text(id);
            json!({"token": token, "logprob": logprob, "bytes": bytes})
        };
        let mut value = entry(id, lp.logprob);
        value["top_logprobs"] = lp.top.iter().map(|&(t, l)| entry(t, l)).collect();
        value
    }

    fn completion_logprobs(&self, pending: &Pending) -> Value {
        let (mut tokens, mut logprobs, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
        let mut offset = pending.offset;
        for (id, lp) in &pending.logprobs {
            let (token, _) = self.token_text(*id);
            offsets.push(offset);
            offset += token.len();
            tokens.push(token);
            logprobs.push(lp.logprob);
            let top: Map<String, Value> = lp
                .top
                .iter()
                .map(|&(t, l)| (self.token_text(t).0, json!(l)))
                .collect();
            tops.push(top);
        }
        json!({"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets})
    }
}

fn finish_reason(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::EndOfText | FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length | FinishReason::ContextFull => "length",
    }
}

/// Events of all choices as they come, tagged with the choice's index.
fn merge(receivers: Vec<Events>) -> impl Stream<Item = (usize, Event)> + Unpin {
    stream::select_all(
        receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| UnboundedReceiverStream::new(rx).map(move |e| (i, e))),
    )
}

fn created() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
