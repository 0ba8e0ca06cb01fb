"""The tests' fake Ollama as a process of its own, so a benchmark's client doesn't share its CPU.

    python bench/fake_upstream.py '{"tokens": ["a", "b"], "token_delay": 0.05}'

Prints the URL it listens on, then serves until its standard input closes.
Benchmarks start it with `fake_process(**behaviour)`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_ollama import FakeOllama  # noqa: E402


@contextmanager
def fake_process(**behaviour) -> Iterator[str]:
    """The fake Ollama in its own process; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, __file__, json.dumps(behaviour)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process.stdout.readline().strip()
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def main() -> None:
    behaviour = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    with FakeOllama(models={"qwen2.5:3b-instruct"}) as fake:
        fake.behave(**behaviour)
        print(fake.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
