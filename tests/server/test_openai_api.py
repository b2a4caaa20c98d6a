"""`minerva serve` driven by the official `openai` Python client: chat and completions (plain
and streamed), models, usage, stop, seeds, n, logprobs, and every documented error status."""

import threading

import httpx
import openai
import pytest

from conftest import start

QUESTION = "Which city is the capital of France? Answer in one word."


def chat(client, model, **kw):
    kw.setdefault("messages", [{"role": "user", "content": QUESTION}])
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, **kw)


def test_models_list(server, client):
    models = client.models.list().data
    assert [m.id for m in models] == [server.model]
    assert client.models.retrieve(server.model).id == server.model


def test_chat_answers_and_counts_usage(server, client):
    r = chat(client, server.model, max_tokens=32)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    assert r.usage.prompt_tokens > 10
    assert 0 < r.usage.completion_tokens <= 32
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_matches_plain_and_reports_usage(server, client):
    plain = chat(client, server.model, max_tokens=24)
    stream = chat(client, server.model, max_tokens=24, stream=True,
                  stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_system_and_assistant_roles_go_through_the_template(server, client):
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "My name is Ann."},
        {"role": "assistant", "content": "Hello Ann."},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
    ]
    short = chat(client, server.model, messages=[messages[0], messages[3]], max_tokens=1)
    full = chat(client, server.model, messages=messages, max_tokens=1)
    # The two middle turns, with their role headers, add well over 8 tokens.
    assert full.usage.prompt_tokens > short.usage.prompt_tokens + 8


def test_completions_plain_and_stream(server, client):
    kw = dict(model=server.model, prompt="The capital of France is", max_tokens=8, temperature=0)
    plain = client.completions.create(**kw)
    assert plain.object == "text_completion" and plain.id.startswith("cmpl-")
    assert plain.usage.completion_tokens == 8 and plain.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(**kw, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    echoed = client.completions.create(**kw, echo=True)
    assert echoed.choices[0].text == kw["prompt"] + plain.choices[0].text
    default = client.completions.create(model=server.model, prompt="Once upon a time", temperature=0)
    assert default.usage.completion_tokens <= 16  # OpenAI's default max_tokens here


def test_max_tokens_and_max_completion_tokens(server, client):
    r = chat(client, server.model, max_tokens=3, messages=[{"role": "user", "content": "Tell me a long story."}])
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
    r = chat(client, server.model, max_completion_tokens=2, messages=[{"role": "user", "content": "Tell me a long story."}])
    assert r.usage.completion_tokens == 2


def test_stop_strings_end_generation_and_are_not_emitted(server, client):
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    full = chat(client, server.model, messages=messages, max_tokens=40).choices[0].message.content
    words = full.split()
    stop = words[len(words) // 2]
    cut = full[: full.index(stop)]
    for kw in ({"stop": stop}, {"stop": ["zzzz-never", stop]}):
        r = chat(client, server.model, messages=messages, max_tokens=40, **kw)
        assert r.choices[0].message.content == cut
        assert r.choices[0].finish_reason == "stop"
        streamed = "".join(c.choices[0].delta.content or ""
                           for c in chat(client, server.model, messages=messages, max_tokens=40, stream=True, **kw)
                           if c.choices)
        assert streamed == cut


def test_seed_reproduces_sampling_and_n_gives_distinct_choices(server, client):
    kw = dict(messages=[{"role": "user", "content": "Invent a name for a cat."}], temperature=1.0, max_tokens=12)
    a = chat(client, server.model, seed=1234, n=3, **kw)
    b = chat(client, server.model, seed=1234, n=3, **kw)
    texts = [c.message.content for c in a.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in b.choices]
    assert len(set(texts)) > 1, texts
    assert 3 <= a.usage.completion_tokens <= 3 * 12  # summed over the choices
    others = {chat(client, server.model, seed=s, **kw).choices[0].message.content for s in (1, 2, 3)}
    assert len(others) > 1


def test_penalties_are_accepted_and_change_sampling(server, client):
    kw = dict(messages=[{"role": "user", "content": "Say 'yes' twenty times."}], max_tokens=30)
    plain = chat(client, server.model, **kw).choices[0].message.content
    penalized = chat(client, server.model, frequency_penalty=2.0, presence_penalty=2.0, **kw).choices[0].message.content
    assert plain != penalized


def test_chat_logprobs(server, client):
    r = chat(client, server.model, max_tokens=6, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens - (r.choices[0].finish_reason == "stop")
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        tops = [x.logprob for x in t.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert t.token == t.top_logprobs[0].token and t.logprob == pytest.approx(tops[0])
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    assert chat(client, server.model, max_tokens=2).choices[0].logprobs is None


def test_completion_logprobs(server, client):
    r = client.completions.create(model=server.model, prompt="One, two, three,", max_tokens=4,
                                  temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert "".join(lp.tokens) == r.choices[0].text
    assert all(len(top) <= 2 and max(top.values()) == pytest.approx(p) for top, p in zip(lp.top_logprobs, lp.token_logprobs))
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def error_of(exc_info):
    body = exc_info.value.response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    return body


def test_400_invalid_parameters(server, client):
    cases = [
        (dict(temperature=5), "temperature"),
        (dict(top_p=1.5), "top_p"),
        (dict(n=0), "n"),
        (dict(max_tokens=-1), "max_tokens"),
        (dict(presence_penalty=3), "presence_penalty"),
        (dict(top_logprobs=5), "top_logprobs"),
        (dict(logprobs=True, top_logprobs=50), "top_logprobs"),
        (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
        (dict(messages=[]), "messages"),
        (dict(messages=[{"role": "wizard", "content": "hi"}]), "messages"),
    ]
    for kw, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            chat(client, server.model, **kw)
        body = error_of(e)
        assert body["type"] == "invalid_request_error" and body["param"] == param, (kw, body)


def test_404_unknown_model(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, "gpt-4o")
    assert error_of(e)["code"] == "model_not_found"


def test_413_prompt_longer_than_the_context(server, client):
    with pytest.raises(openai.APIStatusError) as e:
        chat(client, server.model, messages=[{"role": "user", "content": "hello " * 9000}])
    assert e.value.status_code == 413
    assert error_of(e)["code"] == "context_length_exceeded"


def test_401_without_the_api_key():
    keyed = start("keyed", "--api-key", "s3cret-key")
    try:
        for key in ("wrong-key", "s3cret-ke", "s3cret-key-longer"):
            with pytest.raises(openai.AuthenticationError) as e:
                keyed.client(api_key=key).models.list()
            assert error_of(e)["code"] == "invalid_api_key"
        r = httpx.get(keyed.url + "/v1/models")
        assert r.status_code == 401
        assert chat(keyed.client(api_key="s3cret-key"), keyed.model, max_tokens=2).usage.completion_tokens == 2
        assert httpx.get(keyed.url + "/health").status_code == 200  # health stays open
    finally:
        keyed.stop()


def test_429_when_the_queue_is_full():
    busy = start("busy", "--max-concurrent", "1", "--max-queue", "0")
    try:
        c = busy.client()
        long_request = dict(messages=[{"role": "user", "content": "Write a long story about a dragon."}],
                            max_tokens=400, stream=True)
        stream = chat(c, busy.model, **long_request)
        next(iter(stream))  # admitted and generating
        with pytest.raises(openai.RateLimitError) as e:
            chat(c, busy.model, max_tokens=2)
        assert error_of(e)["code"] == "queue_full"
        # More choices than the server could ever hold at once is a bad request, not a 429.
        with pytest.raises(openai.BadRequestError):
            chat(c, busy.model, max_tokens=2, n=2)
        assert e.value.response.headers.get("retry-after") == "1"
        stream.close()
        # The slot frees once the abandoned stream is dropped.
        for _ in range(100):
            try:
                chat(c, busy.model, max_tokens=2)
                break
            except openai.RateLimitError:
                threading.Event().wait(0.05)
        else:
            pytest.fail("the slot never freed after the stream closed")
    finally:
        busy.stop()


def test_503_while_loading():
    loading = start("loading", "--load-delay-ms", "4000", ready=False)
    try:
        assert httpx.get(loading.url + "/health").status_code == 503
        with pytest.raises(openai.APIStatusError) as e:
            chat(loading.client(), loading.model, max_tokens=2)
        assert e.value.status_code == 503 and error_of(e)["code"] == "model_loading"
        loading.wait_ready()
        assert chat(loading.client(), loading.model, max_tokens=2).usage.completion_tokens == 2
    finally:
        loading.stop()
