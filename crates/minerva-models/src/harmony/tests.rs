//! Harmony round trips: what we render parses back to the same messages, and replies
//! rendered by `openai-harmony` parse into the events they were made from.

use openai_harmony::chat::{Message, Role};

use super::*;
use crate::messages::{Effort, FunctionTool, ReplyEvent, ToolCall};

fn harmony() -> Harmony {
    Harmony::load().expect("harmony loads from the local vocabulary")
}

fn weather_tool() -> FunctionTool {
    FunctionTool {
        name: "get_weather".into(),
        description: "Current weather in a city".into(),
        parameters: Some(serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"]
        })),
    }
}

#[test]
fn renders_the_prompt_gpt_oss_expects() {
    let h = harmony();
    let messages = [
        ChatMessage::new("system", "Answer in one word."),
        ChatMessage::new("user", "Capital of France?"),
    ];
    let options = ChatOptions {
        effort: Effort::High,
        tools: Vec::new(),
        date: Some("2026-11-23".into()),
    };
    let text = h.decode(&h.render(&messages, &options).unwrap()).unwrap();
    // The layout of OpenAI's harmony guide and gpt-oss's chat template.
    let expected = "<|start|>system<|message|>You are ChatGPT, a large language model trained \
by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2026-11-23\n\nReasoning: high\n\n\
# Valid channels: analysis, commentary, final. Channel must be included for every message.\
<|end|><|start|>developer<|message|># Instructions\n\nAnswer in one word.<|end|>\
<|start|>user<|message|>Capital of France?<|end|><|start|>assistant";
    assert_eq!(text, expected);
}

#[test]
fn reasoning_effort_and_tools_reach_the_prompt() {
    let h = harmony();
    for (effort, line) in [
        (Effort::Low, "Reasoning: low"),
        (Effort::Medium, "Reasoning: medium"),
        (Effort::High, "Reasoning: high"),
    ] {
        let options = ChatOptions {
            effort,
            tools: vec![weather_tool()],
            date: None,
        };
        let text = h
            .decode(
                &h.render(&[ChatMessage::new("user", "Weather?")], &options)
                    .unwrap(),
            )
            .unwrap();
        assert!(text.contains(line), "{text}");
        assert!(
            text.contains("Calls to these tools must go to the commentary channel: 'functions'.")
        );
        assert!(text.contains("namespace functions {"), "{text}");
        assert!(
            text.contains("// Current weather in a city\ntype get_weather = (_: {"),
            "{text}"
        );
        assert!(!text.contains("Current date"));
    }
}

/// A whole tool-using conversation renders, and harmony's own parser reads back every message
/// we put in (the developer instructions, the call with its arguments, the tool's result).
#[test]
fn conversation_with_a_tool_call_round_trips() {
    let h = harmony();
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Weather in Paris?"),
        ChatMessage {
            role: "assistant".into(),
            tool_calls: vec![ToolCall::function(
                "call_1",
                "get_weather",
                r#"{"city":"Paris"}"#,
            )],
            ..ChatMessage::default()
        },
        ChatMessage {
            role: "tool".into(),
            content: r#"{"temp_c":21}"#.into(),
            tool_call_id: Some("call_1".into()),
            ..ChatMessage::default()
        },
    ];
    let options = ChatOptions {
        effort: Effort::Low,
        tools: vec![weather_tool()],
        date: None,
    };
    let tokens = h.render(&messages, &options).unwrap();
    let open_turn = h.encode_with_specials("<|start|>assistant");
    assert!(tokens.ends_with(&open_turn));
    let history = tokens[..tokens.len() - open_turn.len()].to_vec();
    let parsed = h
        .encoding
        .parse_messages_from_completion_tokens(history, None)
        .unwrap();
    let summary: Vec<(Role, Option<String>, Option<String>, String)> = parsed
        .iter()
        .skip(2) // system and developer: structured content
        .map(|m: &Message| {
            let text = match &m.content[0] {
                openai_harmony::chat::Content::Text(t) => t.text.clone(),
                other => panic!("unexpected content {other:?}"),
            };
            (
                m.author.role.clone(),
                m.channel.clone(),
                m.recipient.clone(),
                text,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Role::User, None, None, "Weather in Paris?".into()),
            (
                Role::Assistant,
                Some("commentary".into()),
                Some("functions.get_weather".into()),
                r#"{"city":"Paris"}"#.into()
            ),
            (
                Role::Tool,
                Some("commentary".into()),
                Some("assistant".into()),
                r#"{"temp_c":21}"#.into()
            ),
        ]
    );
    assert_eq!(
        parsed[2 + 2].author.name.as_deref(),
        Some("functions.get_weather")
    );
    let text = h.decode(&tokens).unwrap();
    assert!(text.contains("# Instructions\n\nBe brief."), "{text}");
    assert!(text.ends_with("<|start|>assistant"), "{text}");
}

/// Tokens the model would generate after `<|start|>assistant`, rendered by `openai-harmony`.
fn reply_tokens(h: &Harmony, messages: &[Message]) -> Vec<u32> {
    let mut tokens = Vec::new();
    for m in messages {
        h.encoding.render_into(m, &mut tokens, None).unwrap();
    }
    // The prompt already holds the first `<|start|>assistant`.
    let start = h.encode_with_specials("<|start|>assistant");
    assert_eq!(&tokens[..start.len()], start.as_slice());
    tokens.drain(..start.len());
    tokens
}

fn parse_all(h: &Harmony, tokens: &[u32]) -> Vec<ReplyEvent> {
    let mut reply = h.reply();
    let mut events: Vec<ReplyEvent> = tokens.iter().flat_map(|&t| reply.push(t)).collect();
    events.extend(reply.finish());
    merge_text(events)
}

/// Joins consecutive text events of the same kind (they arrive a token at a time).
fn merge_text(events: Vec<ReplyEvent>) -> Vec<ReplyEvent> {
    let mut out: Vec<ReplyEvent> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(ReplyEvent::Reasoning(a)), ReplyEvent::Reasoning(b)) => a.push_str(&b),
            (Some(ReplyEvent::Content(a)), ReplyEvent::Content(b)) => a.push_str(&b),
            (_, e) => out.push(e),
        }
    }
    out
}

#[test]
fn reply_with_reasoning_and_answer_parses_into_both() {
    let h = harmony();
    let mut tokens = reply_tokens(
        &h,
        &[
            Message::from_role_and_content(Role::Assistant, "User asks capital. Paris — café.")
                .with_channel("analysis"),
            Message::from_role_and_content(Role::Assistant, "Paris.").with_channel("final"),
        ],
    );
    // The turn ends with <|return|>, not the <|end|> a rendered history message has.
    let end = h.encode_with_specials("<|end|>");
    assert_eq!(tokens.pop(), Some(end[0]));
    tokens.extend(h.encode_with_specials("<|return|>"));
    assert!(h.stop_tokens().unwrap().contains(tokens.last().unwrap()));
    assert_eq!(
        parse_all(&h, &tokens),
        [
            ReplyEvent::Reasoning("User asks capital. Paris — café.".into()),
            ReplyEvent::Content("Paris.".into()),
        ]
    );
}

#[test]
fn reply_with_a_tool_call_parses_into_a_call() {
    let h = harmony();
    let tokens = reply_tokens(
        &h,
        &[
            Message::from_role_and_content(Role::Assistant, "Need weather.")
                .with_channel("analysis"),
            Message::from_role_and_content(Role::Assistant, r#"{"city": "Paris"}"#)
                .with_channel("commentary")
                .with_recipient("functions.get_weather")
                .with_content_type("<|constrain|>json"),
        ],
    );
    let call = h.encode_with_specials("<|call|>");
    assert_eq!(tokens.last(), Some(&call[0]));
    let events = parse_all(&h, &tokens);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], ReplyEvent::Reasoning("Need weather.".into()));
    let ReplyEvent::ToolCall(call) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(call.function.name, "get_weather");
    assert_eq!(call.function.arguments, r#"{"city": "Paris"}"#);
    assert!(call.id.starts_with("call_"));
}

#[test]
fn text_outside_the_format_is_kept_as_content() {
    let h = harmony();
    let tokens = h.encode_with_specials("Just text, no channels — ünïcode.");
    assert_eq!(
        parse_all(&h, &tokens),
        [ReplyEvent::Content(
            "Just text, no channels — ünïcode.".into()
        )]
    );
    // Long plain text streams once it cannot be a header any more.
    let long = "word ".repeat(80);
    let mut reply = h.reply();
    let streamed: Vec<ReplyEvent> = h
        .encode_with_specials(&long)
        .iter()
        .flat_map(|&t| reply.push(t))
        .collect();
    assert_eq!(merge_text(streamed), [ReplyEvent::Content(long.clone())]);
    assert!(reply.finish().is_empty());
    // Cut short inside the answer (max_tokens): what came is reported.
    let mut tokens = h.encode_with_specials("<|channel|>final<|message|>Par");
    tokens.extend(h.encode_with_specials("is"));
    assert_eq!(
        parse_all(&h, &tokens),
        [ReplyEvent::Content("Paris".into())]
    );
}

#[test]
fn tool_messages_need_a_function_name() {
    let h = harmony();
    let err = h
        .render(&[ChatMessage::new("tool", "42")], &ChatOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("messages[0]") && err.contains("tool_call_id"),
        "{err}"
    );
    let err = h
        .render(&[ChatMessage::new("robot", "hi")], &ChatOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("role 'robot'"), "{err}");
}
