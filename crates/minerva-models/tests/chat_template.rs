//! Chat template tests: the default model's template against llama.cpp's rendered prompt,
//! multi-turn rendering, Python string methods, errors.

use minerva_models::chat_template::{ChatMessage, ChatTemplate, TemplateError};
use minerva_models::formats::gguf::{GgufFile, MetaValue};

fn default_template() -> ChatTemplate {
    let path = minerva_models::model_cache::default_model_path();
    assert!(
        path.exists(),
        "default model not found at {}: run scripts/fetch-default-model first",
        path.display()
    );
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let meta = file.metadata();
    let Some(MetaValue::String(src)) = meta.get("tokenizer.chat_template") else {
        panic!("default model has no tokenizer.chat_template");
    };
    let token = |key: &str| match meta.get(key) {
        Some(MetaValue::U32(id)) => match meta.get("tokenizer.ggml.tokens") {
            Some(MetaValue::Array(t)) => match &t[*id as usize] {
                MetaValue::String(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    ChatTemplate::new(
        src,
        token("tokenizer.ggml.bos_token_id"),
        token("tokenizer.ggml.eos_token_id"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn default_template_matches_llama_cpp_prompt() {
    let greedy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/smollm2/greedy.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let case = &greedy["cases"][0];
    let tmpl = default_template();
    let out = tmpl
        .render(
            &[ChatMessage::new("user", case["prompt"].as_str().unwrap())],
            true,
        )
        .unwrap();
    assert_eq!(out, case["rendered"].as_str().unwrap());
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhich city is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn default_template_conversation() {
    let tmpl = default_template();
    let msgs = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi!"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("user", "Bye."),
    ];
    let out = tmpl.render(&msgs, true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye.<|im_end|>\n<|im_start|>assistant\n"
    );
    // Without the generation prompt, the text simply ends after the last message.
    let out = tmpl.render(&msgs, false).unwrap();
    assert!(out.ends_with("<|im_start|>user\nBye.<|im_end|>\n"));
    assert_eq!(out, ChatTemplate::chatml().render(&msgs, false).unwrap());
}

#[test]
fn chatml_fallback() {
    let out = ChatTemplate::chatml()
        .render(&[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn hf_style_template_features() {
    // Llama-2-like template: bos_token, raise_exception, .strip(), loop.index0,
    // trim_blocks/lstrip_blocks over indented block tags.
    let src = r#"{{ bos_token }}
{% for message in messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {% endif %}
    {% if message['role'] == 'user' %}
        {{ '[INST] ' + message['content'].strip() + ' [/INST]' }}
    {% elif message['role'] == 'assistant' %}
        {{ ' ' + message['content'].strip() + eos_token }}
    {% endif %}
{% endfor %}"#;
    let t = ChatTemplate::new(src, Some("<s>".into()), Some("</s>".into())).unwrap();
    let out = t
        .render(
            &[
                ChatMessage::new("user", "  Hello  "),
                ChatMessage::new("assistant", "Hi there\n"),
                ChatMessage::new("user", "Q"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<s>\n        [INST] Hello [/INST]\n         Hi there</s>\n        [INST] Q [/INST]\n"
    );
    let err = t
        .render(&[ChatMessage::new("assistant", "x")], true)
        .unwrap_err();
    assert!(matches!(err, TemplateError::Raised(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "chat template raised an exception: Conversation roles must alternate user/assistant/user/assistant/..."
    );

    // Python string methods and startswith/endswith, namespace, tojson.
    let src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.content.startswith('/') %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.n }} {{ messages[0].content.upper() }} {{ messages | tojson }}";
    let t = ChatTemplate::new(src, None, None).unwrap();
    let out = t
        .render(
            &[
                ChatMessage::new("user", "/cmd é"),
                ChatMessage::new("user", "x"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(
        out,
        "1 /CMD É [{\"role\": \"user\", \"content\": \"/cmd é\"}, {\"role\": \"user\", \"content\": \"x\"}]"
    );
    // tools/documents are none, as Hugging Face passes them.
    let t = ChatTemplate::new(
        "{% if tools is not none %}T{% endif %}{% if documents is none %}D{% endif %}",
        None,
        None,
    )
    .unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "D");
    // bos_token is undefined (renders empty) when not given.
    let t = ChatTemplate::new("[{{ bos_token }}]", None, None).unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "[]");
}

#[test]
fn syntax_error_is_one_line() {
    let err = ChatTemplate::new("{% for m in messages %}{{ m.content }", None, None).unwrap_err();
    assert!(matches!(err, TemplateError::Syntax(_)));
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.starts_with("chat template: syntax error"), "{msg}");

    let err = ChatTemplate::new("{% if %}", None, None).unwrap_err();
    assert!(!err.to_string().contains('\n'));

    // A render-time error is one line too.
    let t = ChatTemplate::new("{{ messages[0].content.nope() }}", None, None).unwrap();
    let err = t
        .render(&[ChatMessage::new("user", "x")], false)
        .unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)));
    assert!(!err.to_string().contains('\n'));
}
