//! Request bodies of `/v1/chat/completions` and `/v1/completions`: parsing (with the path of
//! a bad field for the error's `param`) and validation against OpenAI's documented ranges.

use minerva_engine::{GenerateOptions, SamplerConfig};
use minerva_models::messages::{today_utc, ChatMessage, ChatOptions, FunctionTool, ToolCall};
use serde::Deserialize;

use crate::error::ApiError;

/// The fields of both endpoints (each uses its own; unknown fields are ignored).
#[derive(Debug, Default, Deserialize)]
pub struct Request {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub prompt: Option<Prompt>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub n: Option<i64>,
    pub stop: Option<Stop>,
    /// A boolean for chat, the number of alternatives (0..=5) for completions.
    pub logprobs: Option<serde_json::Value>,
    pub top_logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub reasoning_effort: Option<String>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<serde_json::Value>,
    // Extensions that llama.cpp's and vLLM's servers accept too.
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// An entry of `tools`: `{"type": "function", "function": {...}}`.
#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionTool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// Parses a JSON body; errors name the field (`param`) and say what is wrong.
pub fn parse(body: &[u8]) -> Result<Request, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::invalid(None, format!("The request body is not valid UTF-8: {e}."))
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let request: Request = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            ApiError::invalid(
                None,
                format!("The request body is not valid JSON: {inner}."),
            )
        } else {
            let param = path.split(['.', '[']).next().unwrap_or(&path).to_string();
            ApiError::invalid(
                Some(&param),
                format!("Invalid value for '{path}': {inner}."),
            )
        }
    })?;
    de.end().map_err(|e| {
        ApiError::invalid(None, format!("The request body is not valid JSON: {e}."))
    })?;
    Ok(request)
}

/// How to run a request: per-choice generation options and response settings.
#[derive(Debug, Clone)]
pub struct Plan {
    pub options: GenerateOptions,
    /// Choices per prompt.
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
}

impl Request {
    /// The `model` field, which OpenAI requires.
    pub fn model(&self) -> Result<&str, ApiError> {
        self.model
            .as_deref()
            .ok_or_else(|| ApiError::invalid(Some("model"), "You must provide a model parameter."))
    }

    /// Validates the sampling fields. `default_max_tokens` is the endpoint's default
    /// (None: until the context is full); `logprobs` the alternatives asked for, if any.
    pub fn plan(
        &self,
        max_tokens: Option<i64>,
        default_max_tokens: Option<usize>,
        logprobs: Option<usize>,
    ) -> Result<Plan, ApiError> {
        let max_tokens = match max_tokens {
            Some(m) if m < 1 => {
                return Err(ApiError::invalid(
                    Some("max_tokens"),
                    format!("max_tokens must be at least 1, got {m}."),
                ))
            }
            Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
            None => default_max_tokens.unwrap_or(usize::MAX),
        };
        let n = in_range("n", self.n.unwrap_or(1), 1, 128)? as usize;
        let temperature = in_range("temperature", self.temperature.unwrap_or(1.0), 0.0, 2.0)?;
        let top_p = in_range("top_p", self.top_p.unwrap_or(1.0), 0.0, 1.0)?;
        let presence = in_range(
            "presence_penalty",
            self.presence_penalty.unwrap_or(0.0),
            -2.0,
            2.0,
        )?;
        let frequency = in_range(
            "frequency_penalty",
            self.frequency_penalty.unwrap_or(0.0),
            -2.0,
            2.0,
        )?;
        let top_k = in_range("top_k", self.top_k.unwrap_or(0), 0, i64::from(u32::MAX))?;
        let min_p = in_range("min_p", self.min_p.unwrap_or(0.0), 0.0, 1.0)?;
        let repetition = in_range(
            "repetition_penalty",
            self.repetition_penalty.unwrap_or(1.0),
            0.01,
            10.0,
        )?;
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(list)) => list.clone(),
        };
        if stop.len() > 4 {
            return Err(ApiError::invalid(
                Some("stop"),
                format!("At most 4 stop sequences are allowed, got {}.", stop.len()),
            ));
        }
        let stream = self.stream.unwrap_or(false);
        let include_usage = match &self.stream_options {
            Some(_) if !stream => {
                return Err(ApiError::invalid(
                    Some("stream_options"),
                    "stream_options is only allowed when stream is true.",
                ))
            }
            Some(o) => o.include_usage.unwrap_or(false),
            None => false,
        };
        Ok(Plan {
            options: GenerateOptions {
                max_tokens,
                sampler: SamplerConfig {
                    temperature: temperature as f32,
                    top_k: top_k as usize,
                    top_p: top_p as f32,
                    min_p: min_p as f32,
                    repetition_penalty: repetition as f32,
                    presence_penalty: presence as f32,
                    frequency_penalty: frequency as f32,
                    seed: self.seed.map(|s| s as u64),
                    ..SamplerConfig::default()
                },
                stop,
                logprobs,
                ignore_eos: false,
            },
            n,
            stream,
            include_usage,
        })
    }

    /// Chat's `logprobs` (bool) and `top_logprobs` (0..=20): the alternatives to report.
    pub fn chat_logprobs(&self) -> Result<Option<usize>, ApiError> {
        let wanted = match &self.logprobs {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ApiError::invalid(
                    Some("logprobs"),
                    format!("logprobs must be a boolean, got {other}."),
                ))
            }
        };
        match self.top_logprobs {
            Some(_) if !wanted => Err(ApiError::invalid(
                Some("top_logprobs"),
                "top_logprobs requires logprobs to be true.",
            )),
            Some(k) => Ok(Some(in_range("top_logprobs", k, 0, 20)? as usize)),
            None => Ok(wanted.then_some(0)),
        }
    }

    /// Completions' `logprobs` (an integer 0..=5): the alternatives to report.
    pub fn completion_logprobs(&self) -> Result<Option<usize>, ApiError> {
        match &self.logprobs {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(k)) if k.as_i64().is_some() => {
                Ok(Some(
                    in_range("logprobs", k.as_i64().unwrap_or_default(), 0, 5)? as usize,
                ))
            }
            Some(other) => Err(ApiError::invalid(
                Some("logprobs"),
                format!("logprobs must be an integer from 0 to 5, got {other}."),
            )),
        }
    }

    /// The conversation, roles checked, content flattened to text.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        let messages = self
            .messages
            .as_ref()
            .ok_or_else(|| ApiError::invalid(Some("messages"), "messages is required."))?;
        if messages.is_empty() {
            return Err(ApiError::invalid(
                Some("messages"),
                "messages must hold at least one message.",
            ));
        }
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role.as_str() {
                    "system" | "developer" => "system",
                    "user" => "user",
                    "assistant" => "assistant",
                    "tool" => "tool",
                    other => {
                        return Err(ApiError::invalid(
                            Some("messages"),
                            format!("messages[{i}].role '{other}' is not supported (use system, developer, user, assistant or tool)."),
                        ))
                    }
                };
                if role == "tool" && m.tool_call_id.is_none() && m.name.is_none() {
                    return Err(ApiError::invalid(
                        Some("messages"),
                        format!("messages[{i}]: a tool message needs tool_call_id."),
                    ));
                }
                Ok(ChatMessage {
                    tool_calls: m.tool_calls.clone(),
                    tool_call_id: m.tool_call_id.clone(),
                    name: m.name.clone(),
                    ..ChatMessage::new(role, content_text(i, m.content.as_ref())?)
                })
            })
            .collect()
    }

    /// Reasoning effort, tools and today's date for rendering the conversation.
    pub fn chat_options(&self) -> Result<ChatOptions, ApiError> {
        let effort = match self.reasoning_effort.as_deref() {
            None => Default::default(),
            Some(e) => e.parse().map_err(|e: String| {
                ApiError::invalid(Some("reasoning_effort"), format!("{e}."))
            })?,
        };
        let use_tools =
            match &self.tool_choice {
                None => true,
                Some(serde_json::Value::String(c)) if c == "auto" => true,
                Some(serde_json::Value::String(c)) if c == "none" => false,
                Some(_) => return Err(ApiError::invalid(
                    Some("tool_choice"),
                    "tool_choice must be \"auto\" or \"none\" (forcing a call is not supported).",
                )),
            };
        let mut tools = Vec::new();
        for (i, tool) in self.tools.iter().flatten().enumerate() {
            if tool.kind != "function" {
                return Err(ApiError::invalid(
                    Some("tools"),
                    format!(
                        "tools[{i}].type '{}' is not supported (use function).",
                        tool.kind
                    ),
                ));
            }
            if use_tools {
                tools.push(tool.function.clone());
            }
        }
        Ok(ChatOptions {
            effort,
            tools,
            date: Some(today_utc()),
        })
    }
}

fn content_text(i: usize, content: Option<&Content>) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(text)) => Ok(text.clone()),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match (p.kind.as_str(), &p.text) {
                ("text", Some(text)) => Ok(text.as_str()),
                (kind, _) => Err(ApiError::invalid(
                    Some("messages"),
                    format!(
                        "messages[{i}].content: part type '{kind}' is not supported (text only)."
                    ),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.concat()),
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ApiError> {
    // `!(a <= b)` instead of `a > b` so that NaN is rejected too.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if !(min <= value && value <= max) {
        return Err(ApiError::invalid(
            Some(name),
            format!("{name} must be between {min} and {max}, got {value}."),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_name_the_problem() {
        let err = parse(b"{\"model\": \"m\"").unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        let err = parse(b"{\"model\":\"m\",\"temperature\":\"hot\"}").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("temperature"));
        let err = parse(b"{\"messages\":[{\"role\":\"user\",\"content\":5}]}").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));
        let err = parse(b"{\"model\":\"\xff\"}").unwrap_err();
        assert!(err.message.contains("UTF-8"), "{}", err.message);
        assert!(parse(b"[1,2]").is_err());
        assert!(parse(b"{\"model\":\"m\",\"unknown\":{\"x\":1}}").is_ok());
    }

    #[test]
    fn ranges_follow_openai() {
        let req = |json: &str| parse(json.as_bytes()).unwrap();
        let plan = |json: &str| req(json).plan(req(json).max_tokens, None, None);
        assert!(plan(r#"{"temperature": 1e9}"#).is_err());
        assert!(plan(r#"{"max_tokens": -5}"#).is_err());
        assert!(plan(r#"{"n": 0}"#).is_err());
        assert!(plan(r#"{"stop": ["a","b","c","d","e"]}"#).is_err());
        assert!(plan(r#"{"stream_options": {"include_usage": true}}"#).is_err());
        let p = plan(r#"{"temperature": 0, "seed": 7, "stop": "x", "n": 2}"#).unwrap();
        assert_eq!(
            (p.n, p.options.sampler.seed, p.options.stop.len()),
            (2, Some(7), 1)
        );
        assert_eq!(p.options.sampler.temperature, 0.0);
        assert!(req(r#"{"top_logprobs": 3}"#).chat_logprobs().is_err());
        assert_eq!(
            req(r#"{"logprobs": true, "top_logprobs": 3}"#)
                .chat_logprobs()
                .unwrap(),
            Some(3)
        );
        assert!(req(r#"{"logprobs": 9}"#).completion_logprobs().is_err());
        assert!(req(r#"{"messages": []}"#).chat_messages().is_err());
        assert!(req(r#"{"messages": [{"role": "tool", "content": "x"}]}"#)
            .chat_messages()
            .is_err());
    }
}
