"""What piagent costs in front of a real model, run by hand (needs `make demo-deps`).

    .venv/bin/python bench/real_model_bench.py              # 10 rounds, about a minute
    .venv/bin/python bench/real_model_bench.py --rounds 3

Starts the demo's llama.cpp server (SmolLM2, 1 thread, fixed seed, so every request
generates the same tokens) and piagent under `gunicorn -c gunicorn.conf.py` with
PROVIDER=openai in front of it. Each round sends the same question straight to llama.cpp
and through piagent's /chat and /v1/chat/completions, in turn, and times the first text
and the whole answer. Medians are printed beside the direct baseline of the same run;
the ratio is what piagent costs. The machine is shared and noisy: compare figures from
one run, not across runs.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from demo.llama_server import MODEL_NAME  # noqa: E402
from tests.llama import llama_server  # noqa: E402
from tests.servers import gunicorn  # noqa: E402

QUESTION = "Name three uses for a Raspberry Pi."
MAX_TOKENS = 48
TEMPERATURE = 0.7
# A chunk of an OpenAI stream that carries text (the first one only names the role).
_TEXT_EVENT = re.compile(rb'"content":"[^"]')

Timing = tuple[float, float]  # seconds to the first text, seconds to the end


def timed(url: str, body: dict, has_text: Callable[[bytes], bool]) -> Timing:
    """POST a streaming request; time its first text and its end."""
    started = time.perf_counter()
    first = None
    with requests.post(url, json=body, stream=True, timeout=120) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=None):
            if first is None and has_text(chunk):
                first = time.perf_counter() - started
    return first if first is not None else float("nan"), time.perf_counter() - started


def paths(llama_url: str, piagent_url: str) -> dict[str, Callable[[], Timing]]:
    """Each way to ask the question, as a call that times one answer."""
    # What piagent sends for the general agent, so that all three generate the same tokens.
    system = (REPO / "prompts" / "general.md").read_text().strip()
    messages = [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}]
    openai_body = {
        "messages": messages,
        "stream": True,
        "max_tokens": MAX_TOKENS,
        "temperature": TEMPERATURE,
    }
    return {
        "llama.cpp direct (baseline)": lambda: timed(
            f"{llama_url}/v1/chat/completions",
            {**openai_body, "model": MODEL_NAME},
            _TEXT_EVENT.search,
        ),
        "piagent /chat, text stream": lambda: timed(
            f"{piagent_url}/chat",
            # No memory: every round sends the same prompt as the baseline.
            {"message": QUESTION, "stream": True},
            bool,
        ),
        "piagent /v1/chat/completions": lambda: timed(
            f"{piagent_url}/v1/chat/completions",
            {**openai_body, "model": "general"},
            _TEXT_EVENT.search,
        ),
    }


def medians(timings: list[Timing]) -> Timing:
    """The median time to the first text and the median time to the end."""
    return (
        statistics.median(first for first, _ in timings),
        statistics.median(total for _, total in timings),
    )


def main() -> None:
    """Run the rounds and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch, llama_server(Path(scratch)) as llama_url:
        env = {
            "PROVIDER": "openai",
            "OPENAI_BASE_URL": f"{llama_url}/v1",
            "OPENAI_MODEL": MODEL_NAME,
            "MAX_TOKENS": str(MAX_TOKENS),
            "TEMPERATURE": str(TEMPERATURE),
            "ENABLE_MEMORY": "false",
        }
        with gunicorn(env, Path(scratch)) as piagent:
            calls = paths(llama_url, piagent.url)
            for call in calls.values():  # warm up: the model, the pools, the worker
                call()
            results: dict[str, list[Timing]] = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, call in calls.items():
                    results[name].append(call())

    print(f"{args.rounds} rounds, {MAX_TOKENS} tokens, SmolLM2-135M on llama.cpp (1 thread)")
    print(f"{'path':32} {'first text':>12} {'ratio':>7} {'whole answer':>14} {'ratio':>7}")
    base_first, base_total = medians(results[next(iter(calls))])
    for name, timings in results.items():
        first, total = medians(timings)
        print(
            f"{name:32} {first * 1000:9.1f} ms {first / base_first:6.2f}x"
            f" {total * 1000:11.1f} ms {total / base_total:6.2f}x"
        )


if __name__ == "__main__":
    main()
