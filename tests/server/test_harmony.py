"""gpt-oss through the server: harmony prompts, and replies split into `reasoning_content` and
`content`. The model is crates/minerva-models/examples/wired_gpt_oss.rs: a real one-layer
gpt-oss checkpoint (o200k_harmony tokenizer, no tokenizer.json, as OpenAI's original layout)
whose hand-set weights answer any harmony prompt with the analysis "Think" and the final
answer "Paris"."""

import json
import subprocess

import openai
import pytest

from conftest import OUTPUT, ROOT, start

WIRED = ROOT / "target" / "release" / "examples" / "wired_gpt_oss"


@pytest.fixture(scope="module")
def harmony_server():
    model = OUTPUT / "wired-gpt-oss"
    subprocess.run([str(WIRED), str(model)], check=True)
    s = start("harmony", "--model", str(model), "--model-id", "wired-gpt-oss")
    yield s
    s.stop()


def ask(server, **kw):
    return server.client().chat.completions.create(
        model="wired-gpt-oss",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=32,
        temperature=0,
        **kw,
    )


def test_reasoning_and_answer_come_apart(harmony_server):
    r = ask(harmony_server)
    message = r.choices[0].message
    assert message.content == "Paris"
    assert message.model_extra["reasoning_content"] == "Think"
    assert r.choices[0].finish_reason == "stop"
    # <|channel|>analysis<|message|>Think<|end|><|start|>assistant<|channel|>final<|message|>Paris
    # and the <|return|> that ends the turn.
    assert r.usage.completion_tokens == 12


def test_streamed_reasoning_and_answer_come_apart(harmony_server):
    reasoning, content, finish = "", "", None
    for chunk in ask(harmony_server, stream=True):
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        content += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (reasoning, content, finish) == ("Think", "Paris", "stop")


def test_reasoning_effort_and_tools_are_accepted(harmony_server):
    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }]
    for effort in ["low", "medium", "high"]:
        r = ask(harmony_server, reasoning_effort=effort, tools=tools)
        assert r.choices[0].message.content == "Paris"
    # A conversation that went through a tool call renders too.
    r = harmony_server.client().chat.completions.create(
        model="wired-gpt-oss",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
        ],
        tools=tools,
        max_tokens=32,
        temperature=0,
    )
    assert r.choices[0].message.content == "Paris"


def test_bad_reasoning_effort_names_the_field(harmony_server):
    with pytest.raises(openai.BadRequestError) as e:
        ask(harmony_server, reasoning_effort="extreme")
    assert e.value.body["param"] == "reasoning_effort"
    assert "extreme" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        harmony_server.client().chat.completions.create(
            model="wired-gpt-oss",
            messages=[{"role": "tool", "content": "42"}],
        )
    assert e.value.body["param"] == "messages"
