"""piagent's own work per relayed token, in one process and without sockets, run by hand.

    .venv/bin/python bench/relay_path_bench.py
    .venv/bin/python bench/relay_path_bench.py --tokens 20000 --repeat 3

Each token arrives alone, as it does when the relay keeps up with the model server: a
chunk of an Ollama /api/chat stream is handed to the provider (chunked framing undone,
the NDJSON line parsed, its text taken), the generation (timing, the disconnect guard)
and the relay, which frames it for the client (plain text, NDJSON, SSE, /v1 chunks).
The baseline, timed in the same run, is the least any Python relay does per token:
undo the chunk, parse the line with json.loads, frame one event with json.dumps.

Why a figure without sockets: with the fake at full speed on a quiet machine, the
worker in bench/relay_cost_bench.py stays near the speed of what feeds it and reads
several tokens at once whenever it falls behind, so its CPU per token hardly moves
when the relay's own work does. Here nothing else runs; best of `--repeat`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from piagent.chat.admission import AdmissionGate  # noqa: E402
from piagent.chat.disconnect import DisconnectWatch  # noqa: E402
from piagent.chat.generation import Generation  # noqa: E402
from piagent.http.relay import stream_body  # noqa: E402
from piagent.http.stream_formats import FORMATS, NDJSON, SSE, TEXT, StreamFormat  # noqa: E402
from piagent.messages import Message  # noqa: E402
from piagent.openai_api.format import ChunkFormat, Completion  # noqa: E402
from piagent.ops.metrics import Metrics  # noqa: E402
from piagent.ops.trace import RequestTrace  # noqa: E402
from piagent.providers.base import GenerationOptions  # noqa: E402
from piagent.providers.chunked import ChunkedDecoder  # noqa: E402
from piagent.providers.ollama import OllamaChatStream  # noqa: E402

OPTIONS = GenerationOptions(temperature=0.7, ctx_tokens=2048, max_tokens=256)


def _chunk(obj: dict) -> bytes:
    """One line of an Ollama stream as its own HTTP chunk, as Ollama writes it."""
    line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    return b"%x\r\n%s\r\n" % (len(line), line)


TOKEN = _chunk(
    {
        "model": "qwen2.5:3b-instruct",
        "created_at": "2026-12-04T13:20:00.123456Z",
        "message": {"role": "assistant", "content": " w42"},
        "done": False,
    }
)
FINAL = (
    _chunk(
        {
            "model": "qwen2.5:3b-instruct",
            "created_at": "2026-12-04T13:20:01.123456Z",
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            "prompt_eval_count": 12,
            "eval_count": 2,
            "eval_duration": 1000,
        }
    )
    + b"0\r\n\r\n"
)


class _Replay:
    """A model server's reply from memory: what UpstreamResponse.reads gives, one token a read."""

    def __init__(self, tokens: int) -> None:
        self._tokens = tokens

    def reads(self) -> Iterator[bytes]:
        feed = ChunkedDecoder().feed
        for _ in range(self._tokens):
            yield feed(TOKEN)
        yield feed(FINAL)

    def close(self) -> None:
        pass


class _Provider:
    name = "replay"

    def __init__(self, tokens: int) -> None:
        self._tokens = tokens

    def open_chat(
        self, messages: Sequence[Message], model: str, options: GenerationOptions, *, stream: bool
    ) -> OllamaChatStream:
        return OllamaChatStream(_Replay(self._tokens))


def piagent_path(fmt: StreamFormat, tokens: int) -> float:
    """Seconds to relay `tokens` tokens through the provider, the generation and the relay."""
    generation = Generation(
        provider=_Provider(tokens),
        admission=AdmissionGate(slots=1, queue_max=0, timeout_s=5),
        metrics=Metrics(),
        trace=RequestTrace(),
        watch=DisconnectWatch({}),
        stream=True,
    )
    call = ([Message("user", "hi")], "qwen2.5:3b-instruct", OPTIONS)
    with Flask(__name__).test_request_context(method="POST"):
        started = time.perf_counter()
        body = stream_body(generation, call, fmt, heartbeat_s=10.0)
        for _ in body:
            pass
        body.close()
        return time.perf_counter() - started


def bare_path(tokens: int) -> float:
    """Seconds for the least a Python relay does with the same tokens."""
    started = time.perf_counter()
    for _ in range(tokens):
        data = TOKEN
        payload = data[data.index(b"\r\n") + 2 : -2]
        text = json.loads(payload)["message"]["content"]
        (json.dumps({"type": "delta", "text": text}) + "\n").encode()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    formats = {
        "text": FORMATS[TEXT],
        "NDJSON": FORMATS[NDJSON],
        "SSE": FORMATS[SSE],
        "/v1 chunks": ChunkFormat.for_completion(Completion("general"), include_usage=False),
    }

    def best(measure: Callable[[], float]) -> float:
        return min(measure() for _ in range(args.repeat)) / args.tokens * 1e6

    bare = best(lambda: bare_path(args.tokens))
    print(f"{args.tokens} tokens, each read alone; best of {args.repeat}")
    print(f"{'least a relay does':20} {bare:6.2f} µs/token")
    for name, fmt in formats.items():
        own = best(lambda fmt=fmt: piagent_path(fmt, args.tokens))
        print(f"{name:20} {own:6.2f} µs/token  x{own / bare:4.2f} least")


if __name__ == "__main__":
    main()
