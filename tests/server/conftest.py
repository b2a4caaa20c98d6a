"""Shared fixtures for the server tests: real `minerva serve` processes on free loopback ports,
driven by the official `openai` client. Run by scripts/test-server (part of scripts/test)."""

import os
import pathlib
import re
import subprocess
import threading
import time
import urllib.request

import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "release" / "minerva"
OUTPUT = ROOT / "target" / "test-output" / "server"


class Server:
    """A `minerva serve --port 0` child process; its stderr goes to a log file."""

    def __init__(self, name, *args):
        OUTPUT.mkdir(parents=True, exist_ok=True)
        self.log_path = OUTPUT / f"{name}.log"
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = self._wait_for_address()
        self.model = self.url and re.search(r"serving (\S+) on", self._first_line).group(1)

    def _wait_for_address(self):
        line = self.proc.stderr.readline()
        self._first_line = line
        match = re.search(r"on (http://\S+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"minerva serve did not start: {line!r}")
        log = open(self.log_path, "w")
        log.write(line)
        threading.Thread(target=lambda: [log.write(l) or log.flush() for l in self.proc.stderr],
                         daemon=True).start()
        return match.group(1)

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("minerva serve did not become ready")

    def metrics(self):
        """The /metrics samples as {name_with_labels: value}."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def client(self, api_key="unused", **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **kw)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(name, *args, ready=True):
    server = Server(name, *args)
    if ready:
        server.wait_ready()
    return server


@pytest.fixture(scope="session")
def server():
    s = start("main", "--max-concurrent", "4", "--max-queue", "64")
    yield s
    s.stop()


@pytest.fixture
def client(server):
    return server.client()
