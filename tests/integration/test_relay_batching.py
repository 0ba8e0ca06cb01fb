"""Fragments that arrive together are written together, as the very bytes they make one by one.

The relay hands on each read from the model server whole: lines that were already
waiting become one write, and a fragment alone is written the moment it arrives.
"""

from __future__ import annotations

import json
import re
import time

import pytest

# Every kind of text a JSON encoder treats specially, and two that a careless one breaks.
TOKENS = ["Hel", 'lo "q"', " back\\slash", "\n line", " é😀", " <b>&</b>", "\u2028", "\t", "."]
CONVERSATION = "batching-1"
ACCEPTS = ["text/plain", "application/x-ndjson", "text/event-stream"]


def compact(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def read_stream(client, path: str, body: dict, accept: str) -> list[bytes]:
    """The body's writes, in order, as the server handed them to the WSGI server."""
    response = client.post(path, json=body, headers={"Accept": accept}, buffered=False)
    assert response.status_code == 200
    try:
        return list(response.response)
    finally:
        response.close()


def chat_writes(client, fake, accept: str, *, packed: bool) -> list[bytes]:
    # packed: the fake writes every line in one go; else each line 10 ms after the last.
    # A fixed prompt count: the second chat of the conversation has a longer prompt.
    fake.behave(
        tokens=TOKENS, pack_lines=packed, token_delay=0 if packed else 0.01, prompt_eval_count=12
    )
    body = {"message": "hi", "stream": True, "conversation_id": CONVERSATION}
    return read_stream(client, "/chat", body, accept)


def expected_chat_body(accept: str) -> bytes:
    """The body as the relay wrote it before it batched: each event serialised whole."""
    if accept == "text/plain":
        return "".join(TOKENS).encode()
    done = {
        "type": "done",
        "conversation_id": CONVERSATION,
        "model": "qwen2.5:3b-instruct",
        "done_reason": "stop",
        "usage": {"prompt_tokens": 12, "completion_tokens": len(TOKENS)},
    }
    events = [{"type": "delta", "text": t} for t in TOKENS] + [done]
    if accept == "text/event-stream":
        return "".join(f"data: {compact(e)}\n\n" for e in events).encode()
    return "".join(f"{compact(e)}\n" for e in events).encode()


@pytest.mark.parametrize("accept", ACCEPTS)
def test_lines_arriving_in_one_read_are_one_write_of_the_same_bytes(client, fake, accept):
    packed = chat_writes(client, fake, accept, packed=True)
    paced = chat_writes(client, fake, accept, packed=False)
    assert b"".join(packed) == b"".join(paced) == expected_chat_body(accept)
    assert len(paced) >= len(TOKENS)  # one write per fragment when they come one by one
    assert len(packed) <= 2  # the fragments, then (for events) the end


def test_v1_chunks_arriving_together_are_the_same_bytes(client, fake):
    body = {"model": "general", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    bodies = []
    for packed in (True, False):
        fake.behave(tokens=TOKENS, pack_lines=packed, token_delay=0 if packed else 0.01)
        text = b"".join(read_stream(client, "/v1/chat/completions", body, "*/*")).decode()
        identity = re.search(r'"id":"(chatcmpl-[0-9a-f]+)","object":[^,]+,"created":(\d+)', text)
        head = {
            "id": identity[1],
            "object": "chat.completion.chunk",
            "created": int(identity[2]),
            "model": "general",
        }
        chunks = [
            {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
            for delta, reason in [({"role": "assistant", "content": t}, None) for t in TOKENS]
            + [({}, "stop")]
        ]
        assert text == "".join(f"data: {compact(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        bodies.append(text.replace(identity[1], "ID").replace(identity[2], "0"))
    assert bodies[0] == bodies[1]


def test_a_fragment_alone_is_written_without_waiting_for_the_next(client, fake):
    fake.behave(tokens=["first", "second"], token_delay=2)
    started = time.monotonic()
    body = {"message": "hi", "stream": True}
    response = client.post("/chat", json=body, buffered=False)
    try:
        assert next(iter(response.response)) == b"first"
        assert time.monotonic() - started < 1  # well before the fake's next line
        assert fake.generations[-1].tokens_sent == 1
    finally:
        response.close()
