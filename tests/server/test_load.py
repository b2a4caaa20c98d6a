"""A short run of the bounded load script (scripts/load_test.py): 200 concurrent clients on
the default model with zero errors other than deliberate 429s, bounded RSS, and a server that
still answers with empty queues afterwards. The 60-second run is `scripts/load-test`."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_200_clients_get_answers_or_429s():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "load_test.py"),
                             "--clients", "200", "--seconds", "10"],
                            capture_output=True, text=True, timeout=600)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert '"completed": 0,' not in result.stdout
