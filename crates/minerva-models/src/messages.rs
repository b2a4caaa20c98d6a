//! What a chat is made of, whatever format renders it: messages (with OpenAI-style tool
//! calls), the options of a request, and the pieces of a parsed reply.

use std::str::FromStr;

/// One chat message. Serialized the way OpenAI's API and Hugging Face chat templates spell
/// it, so templates that know tool calls see them where they look.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// Functions an `assistant` message called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the function whose result `content` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..ChatMessage::default()
        }
    }
}

/// A function call, as OpenAI's `tool_calls[]` entries spell it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as the model wrote them (JSON text, not validated).
    pub arguments: String,
}

impl ToolCall {
    pub fn function(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        ToolCall {
            id: id.into(),
            kind: "function".into(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// A function the model may call (OpenAI `tools[]` with `type: "function"`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FunctionTool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

/// What rendering a conversation needs besides its messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatOptions {
    /// How long a reasoning model thinks before answering.
    pub effort: Effort,
    /// Functions the model may call.
    pub tools: Vec<FunctionTool>,
    /// Today's date (YYYY-MM-DD) for formats that state it; `None` leaves it out.
    pub date: Option<String>,
}

/// A piece of the assistant's reply, available as soon as its token is parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyEvent {
    /// The model's reasoning (harmony's `analysis` channel).
    Reasoning(String),
    /// Text meant for the user.
    Content(String),
    /// A complete function call.
    ToolCall(ToolCall),
}

/// How long the model reasons before answering (harmony's `Reasoning:` line; a template's `reasoning_effort`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Effort {
    Low,
    #[default]
    Medium,
    High,
}

impl FromStr for Effort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "low" => Ok(Effort::Low),
            "medium" => Ok(Effort::Medium),
            "high" => Ok(Effort::High),
            other => Err(format!(
                "reasoning effort '{other}' is not one of low, medium, high"
            )),
        }
    }
}

/// Today's date in UTC as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    crate::chat_template::strftime("%Y-%m-%d", secs)
}
