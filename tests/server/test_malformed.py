"""Malformed requests get OpenAI-shaped errors with the documented status, never a crash: the
server keeps serving afterwards."""

import httpx


def post(server, body, content_type="application/json"):
    return httpx.post(server.url + "/v1/chat/completions", content=body,
                      headers={"Content-Type": content_type}, timeout=60)


def test_malformed_requests(server):
    model = server.model
    cases = [
        ("bad JSON", b'{"model": "x", "messages": [', 400),
        ("not an object", b"[1, 2, 3]", 400),
        ("wrong type", ('{"model": "%s", "messages": "hello"}' % model).encode(), 400),
        ("wrong content type", ('{"model": "%s", "messages": [{"role": "user", "content": 5}]}' % model).encode(), 400),
        ("missing model", b'{"messages": [{"role": "user", "content": "hi"}]}', 400),
        ("negative max_tokens", ('{"model": "%s", "max_tokens": -3, "messages": [{"role": "user", "content": "hi"}]}' % model).encode(), 400),
        ("fractional max_tokens", ('{"model": "%s", "max_tokens": 2.5, "messages": [{"role": "user", "content": "hi"}]}' % model).encode(), 400),
        ("temperature 1e9", ('{"model": "%s", "temperature": 1e9, "messages": [{"role": "user", "content": "hi"}]}' % model).encode(), 400),
        ("empty messages", ('{"model": "%s", "messages": []}' % model).encode(), 400),
        ("invalid UTF-8", b'{"model": "\xff\xfe", "messages": []}', 400),
        ("10 MB body", b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (10 << 20) + b'"}]}', 413),
        ("empty body", b"", 400),
    ]
    for name, body, status in cases:
        r = post(server, body)
        assert r.status_code == status, (name, r.status_code, r.text[:200])
        error = r.json()["error"]
        assert error["message"] and error["type"], name
        print(f"{name:22} -> {r.status_code} {error['message'][:90]}")
    r = httpx.get(server.url + "/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    r = httpx.delete(server.url + "/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
    # Still serving, and no API request ever got a 5xx.
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    ok = post(server, ('{"model": "%s", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}' % model).encode())
    assert ok.status_code == 200
    metrics = server.metrics()
    assert not [k for k, v in metrics.items() if k.startswith('minerva_requests_total{endpoint="/v1') and 'status="5' in k and v]
