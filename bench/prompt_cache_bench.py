"""How much prompt the model server reads with each MEMORY_TRIM, run by hand (`make demo-deps`).

    .venv/bin/python bench/prompt_cache_bench.py            # 2 x 20 turns, a few minutes
    .venv/bin/python bench/prompt_cache_bench.py --turns 12 --per-turn

For each policy in turn, starts the demo's llama.cpp server (SmolLM2, 1 thread, fixed
seed, /metrics on) and piagent under `gunicorn -c gunicorn.conf.py` with
PROVIDER=openai in front of it, the default memory and context limits, temperature 0
and MEMORY_TRIM set. One conversation of the same questions goes through /chat as a
text stream. llama.cpp's /metrics counts the prompt tokens it evaluated (those it did
not have cached) and the time it spent on them; read before and after each turn, they
give each turn's share. Printed per policy: prompt tokens evaluated and prompt time
summed over the turns, and the median time to the first text of a reply.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from demo.llama_server import MODEL_NAME  # noqa: E402
from tests.llama import llama_server  # noqa: E402
from tests.servers import gunicorn  # noqa: E402

POLICIES = ("sliding", "block")
QUESTIONS = [
    "What is a Raspberry Pi?",
    "Which operating system should I install on it?",
    "How do I flash that system onto a memory card?",
    "How do I connect to the Pi over SSH?",
    "How can I see how much disk space is free?",
    "How do I check the CPU temperature?",
    "What is a good way to keep the Pi cool?",
    "How do I install a package with apt?",
    "How do I update every installed package?",
    "How can I make a program start at boot?",
    "How do I give the Pi a fixed IP address?",
    "How do I read the system log?",
    "How much memory is in use right now?",
    "How do I add a new user?",
    "How can I back up the memory card?",
    "What does the GPIO header do?",
    "How do I blink an LED from Python?",
    "How can I run a small web server on it?",
    "How do I shut the Pi down safely?",
    "Summarise what we talked about in one sentence.",
]
_COUNTERS = {
    "tokens": re.compile(r"^llamacpp:prompt_tokens_total (\S+)$", re.M),
    "seconds": re.compile(r"^llamacpp:prompt_seconds_total (\S+)$", re.M),
}


@dataclass(frozen=True)
class TurnFigures:
    """What one turn cost the model server, and how long its reply took to begin."""

    prompt_tokens: int  # evaluated: not taken from the cache
    prompt_s: float
    first_text_s: float


def prompt_counters(llama_url: str) -> tuple[int, float]:
    """llama.cpp's running totals: prompt tokens evaluated, seconds spent evaluating them."""
    text = requests.get(f"{llama_url}/metrics", timeout=10).text
    tokens, seconds = (float(pattern.search(text).group(1)) for pattern in _COUNTERS.values())
    return int(tokens), seconds


def ask(piagent_url: str, conversation_id: str, message: str) -> float:
    """Send one message as a text stream, read the whole reply; seconds to its first text."""
    body = {"message": message, "conversation_id": conversation_id, "stream": True}
    started = time.perf_counter()
    first = None
    with requests.post(f"{piagent_url}/chat", json=body, stream=True, timeout=300) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=None):
            if first is None and chunk:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"no reply to {message!r}")
    return first


def converse(llama_url: str, piagent_url: str, turns: int) -> list[TurnFigures]:
    """One conversation of `turns` questions; what each turn cost."""
    # A first, unrelated chat: each policy starts with the system prompt in the cache.
    ask(piagent_url, uuid.uuid4().hex, "Hello!")
    conversation_id = uuid.uuid4().hex
    figures = []
    for question in QUESTIONS[:turns]:
        tokens, seconds = prompt_counters(llama_url)
        first_text_s = ask(piagent_url, conversation_id, question)
        tokens_after, seconds_after = prompt_counters(llama_url)
        figures.append(TurnFigures(tokens_after - tokens, seconds_after - seconds, first_text_s))
    return figures


def main() -> None:
    """Run one conversation per policy and print what each cost."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=len(QUESTIONS), choices=range(2, 21))
    parser.add_argument("--per-turn", action="store_true", help="also print each turn's tokens")
    args = parser.parse_args()

    results: dict[str, list[TurnFigures]] = {}
    for policy in POLICIES:
        # A model server of its own for each policy: llama.cpp also keeps earlier prompts
        # in RAM, and the second conversation would find the first one's there.
        with (
            tempfile.TemporaryDirectory() as scratch,
            llama_server(Path(scratch), metrics=True) as llama_url,
        ):
            env = {
                "PROVIDER": "openai",
                "OPENAI_BASE_URL": f"{llama_url}/v1",
                "OPENAI_MODEL": MODEL_NAME,
                "TEMPERATURE": "0",
                "MEMORY_TRIM": policy,
            }
            with gunicorn(env, Path(scratch)) as piagent:
                results[policy] = converse(llama_url, piagent.url, args.turns)

    print(
        f"{args.turns} turns of one conversation, SmolLM2-135M on llama.cpp (1 thread), "
        "MEMORY_MAX_TURNS 8, CTX_TOKENS 2048, MAX_TOKENS 200, temperature 0"
    )
    print(f"{'MEMORY_TRIM':12} {'prompt tokens':>14} {'prompt time':>12} {'median first text':>18}")
    totals = {policy: summary(figures) for policy, figures in results.items()}
    for policy, (tokens, seconds, first) in totals.items():
        print(f"{policy:12} {tokens:14d} {seconds:10.2f} s {first * 1000:15.0f} ms")
    (sliding_tokens, _, sliding_first), (block_tokens, _, block_first) = totals.values()
    print(
        f"block / sliding: {block_tokens / sliding_tokens:.2f} of the prompt tokens, "
        f"{block_first / sliding_first:.2f} of the median time to first text"
    )
    if args.per_turn:
        for policy, figures in results.items():
            print(f"{policy} tokens per turn: {' '.join(str(f.prompt_tokens) for f in figures)}")


def summary(figures: list[TurnFigures]) -> tuple[int, float, float]:
    """Prompt tokens and prompt seconds summed over the turns; the median time to first text."""
    return (
        sum(f.prompt_tokens for f in figures),
        sum(f.prompt_s for f in figures),
        statistics.median(f.first_text_s for f in figures),
    )


if __name__ == "__main__":
    main()
