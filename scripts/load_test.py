"""Bounded load test for `minerva serve` (loopback only; stops by itself).

Starts a server on a free loopback port (or uses --url), runs CLIENTS concurrent clients for
SECONDS, each sending streamed chat requests back to back (a 429 makes a client wait the
Retry-After time), samples the server's RSS, then checks the server still answers and that
its queue and KV gauges are back to zero. Prints a summary and one JSON line; exits 1 on any
error other than a deliberate 429, on unbounded RSS growth, or if the server stopped answering.

    scripts/load-test [--clients 200] [--seconds 60] [--max-tokens 32] [-- SERVE ARGS]
"""

import argparse
import asyncio
import json
import os
import pathlib
import random
import re
import statistics
import subprocess
import sys
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMPTS = [
    "Give me three tips for learning to cook.",
    "What is the boiling point of water in Celsius?",
    "Write a haiku about autumn.",
    "Explain what a CPU cache is in one sentence.",
    "Name two planets of the solar system.",
]
RSS_GROWTH_LIMIT_MIB = 256


def start_server(serve_args):
    proc = subprocess.Popen([str(ROOT / "target/release/minerva"), "serve", "--host", "127.0.0.1",
                             "--port", "0", *serve_args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    match = re.search(r"serving (\S+) on (http://\S+)", line)
    if not match:
        proc.kill()
        sys.exit(f"load-test: minerva serve did not start: {line!r}")
    return proc, match.group(2), match.group(1)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def one_request(client, url, model, max_tokens, stats):
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": max_tokens, "temperature": 0.7,
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}]}
    start = time.perf_counter()
    first = None
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code == 429:
            await r.aread()
            stats["rejected_429"] += 1
            return float(r.headers.get("retry-after", "1"))
        if r.status_code != 200:
            stats["errors"].append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            return 1.0
        done = False
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                stats["errors"].append(f"stream error: {chunk['error']['message']}")
                return 1.0
            if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter()
            if chunk.get("usage"):
                stats["tokens"] += chunk["usage"]["completion_tokens"]
        if not done:
            stats["errors"].append("stream ended without [DONE]")
            return 1.0
    stats["latency"].append(time.perf_counter() - start)
    if first is not None:
        stats["ttft"].append(first - start)
    stats["completed"] += 1
    return 0.0


async def client_loop(client, url, model, max_tokens, deadline, stats):
    while time.time() < deadline:
        try:
            wait = await one_request(client, url, model, max_tokens, stats)
        except (httpx.HTTPError, json.JSONDecodeError) as e:
            stats["errors"].append(f"{type(e).__name__}: {e}")
            wait = 1.0
        if wait:
            # Jitter so rejected clients do not come back in lockstep.
            await asyncio.sleep(min(wait * random.uniform(0.5, 1.5), max(0.0, deadline - time.time())))


async def sample_rss(pid, samples):
    while True:
        samples.append(rss_mib(pid))
        await asyncio.sleep(0.5)


async def run_load(url, model, pid, args):
    stats = {"completed": 0, "rejected_429": 0, "tokens": 0, "latency": [], "ttft": [], "errors": []}
    rss = []
    limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=args.clients + 8)
    timeout = httpx.Timeout(args.request_timeout)
    start = time.time()
    deadline = start + args.seconds
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        sampler = asyncio.ensure_future(sample_rss(pid, rss)) if pid else None
        await asyncio.gather(*[client_loop(client, url, model, args.max_tokens, deadline, stats)
                               for _ in range(args.clients)])
        if sampler:
            sampler.cancel()
    stats["elapsed"] = time.time() - start
    return stats, rss


def check_after(url, model):
    """The server still answers, and nothing is left queued, running or cached."""
    problems = []
    with httpx.Client(timeout=60) as c:
        if c.get(url + "/health").status_code != 200:
            problems.append("/health did not answer 200 after the load")
        r = c.post(url + "/v1/chat/completions", json={"model": model, "max_tokens": 4, "messages": [
            {"role": "user", "content": "Still there?"}]})
        if r.status_code != 200:
            problems.append(f"a chat request after the load got HTTP {r.status_code}")
        deadline = time.time() + 10
        while True:
            text = c.get(url + "/metrics").text
            gauges = {name: float(v) for name, v in re.findall(
                r"^minerva_(queue_depth|active_generations|kv_cache_tokens) (\S+)$", text, re.M)}
            if not any(gauges.values()) or time.time() > deadline:
                break
            time.sleep(0.05)
        if any(gauges.values()):
            problems.append(f"gauges not back to zero after the load: {gauges}")
    return problems


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--request-timeout", type=float, default=120)
    p.add_argument("--url", help="use a running server instead of starting one (no RSS check)")
    p.add_argument("--model", help="model id (with --url)")
    p.add_argument("serve_args", nargs="*", help="extra `minerva serve` arguments (after --)")
    args = p.parse_args()

    proc = None
    if args.url:
        url, model, pid = args.url.rstrip("/"), args.model, None
        if not model:
            model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    else:
        proc, url, model = start_server(args.serve_args)
        pid = proc.pid
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        baseline = rss_mib(pid) if pid else None
        stats, rss = asyncio.run(run_load(url, model, pid, args))
        problems = check_after(url, model)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)

    if stats["errors"]:
        problems.append(f"{len(stats['errors'])} errors other than 429, e.g. {stats['errors'][:3]}")
    peak = max(rss) if rss else None
    if pid and peak - baseline > RSS_GROWTH_LIMIT_MIB:
        problems.append(f"RSS grew {peak - baseline:.0f} MiB (limit {RSS_GROWTH_LIMIT_MIB})")
    lat, ttft = stats["latency"], stats["ttft"]
    report = {
        "clients": args.clients, "seconds": round(stats["elapsed"], 1), "max_tokens": args.max_tokens,
        "completed": stats["completed"], "rejected_429": stats["rejected_429"], "errors": len(stats["errors"]),
        "tokens": stats["tokens"], "tokens_per_s": round(stats["tokens"] / stats["elapsed"], 1),
        "latency_p50_s": round(percentile(lat, 50), 3), "latency_p99_s": round(percentile(lat, 99), 3),
        "ttft_p50_s": round(percentile(ttft, 50), 3), "ttft_p99_s": round(percentile(ttft, 99), 3),
        "rss_baseline_mib": baseline and round(baseline, 1), "rss_peak_mib": peak and round(peak, 1),
        "rss_end_mib": rss and round(rss[-1], 1), "problems": problems,
    }
    print(f"load: {args.clients} clients for {report['seconds']} s, {report['completed']} requests done, "
          f"{report['rejected_429']} deliberate 429s, {report['errors']} errors")
    print(f"      {report['tokens']} tokens, {report['tokens_per_s']} tok/s; latency p50 {report['latency_p50_s']} s "
          f"p99 {report['latency_p99_s']} s; first token p50 {report['ttft_p50_s']} s p99 {report['ttft_p99_s']} s")
    if pid:
        print(f"      RSS {report['rss_baseline_mib']} MiB at start, peak {report['rss_peak_mib']} MiB, "
              f"end {report['rss_end_mib']} MiB")
    for problem in problems:
        print(f"load: FAIL: {problem}")
    print(json.dumps(report))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
