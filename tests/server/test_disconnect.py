"""Clients that hang up mid-stream: their generations stop within a step, and the KV caches
and queue slots they held are released (seen through /metrics)."""

import asyncio
import time

import httpx

STREAMS = 50


async def read_then_hang_up(client, url, body, tokens):
    """Reads `tokens` content chunks of a streamed answer, then closes the connection."""
    async with client.stream("POST", url, json=body) as r:
        assert r.status_code == 200, await r.aread()
        seen = 0
        async for line in r.aiter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                seen += 1
                if seen == tokens:
                    return seen
    return seen


def gauges(server):
    m = server.metrics()
    return {k: m[f"minerva_{k}"] for k in ("active_generations", "queue_depth", "kv_cache_tokens", "kv_cache_bytes")}


def test_disconnected_streams_free_their_slots(server):
    before = server.metrics()
    body = {"model": server.model, "stream": True, "max_tokens": 300, "temperature": 0.8, "seed": 1,
            "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]}

    async def run():
        limits = httpx.Limits(max_connections=STREAMS)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return await asyncio.gather(*[
                read_then_hang_up(client, server.url + "/v1/chat/completions", body, 2 + i % 3)
                for i in range(STREAMS)])

    read = asyncio.run(run())
    assert all(n >= 2 for n in read), read
    deadline = time.time() + 5
    while time.time() < deadline and any(gauges(server).values()):
        time.sleep(0.02)
    assert gauges(server) == {"active_generations": 0, "queue_depth": 0, "kv_cache_tokens": 0, "kv_cache_bytes": 0}
    after = server.metrics()
    cancelled = after["minerva_cancelled_generations_total"] - before["minerva_cancelled_generations_total"]
    generated = after["minerva_generated_tokens_total"] - before["minerva_generated_tokens_total"]
    # Each stream read k tokens; a content chunk can hold more than one token and the server
    # may run one more pass before it sees the hang-up, so allow two tokens of slack each.
    print(f"{STREAMS} streams read {sum(read)} chunks; server generated {generated:.0f} tokens, cancelled {cancelled:.0f}")
    assert cancelled == STREAMS
    assert generated <= sum(read) + 2 * STREAMS
    # Nothing keeps generating afterwards.
    time.sleep(0.5)
    assert server.metrics()["minerva_generated_tokens_total"] == after["minerva_generated_tokens_total"]
