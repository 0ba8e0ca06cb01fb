"""Chunked transfer decoding from canned bytes, whatever the read boundaries."""

from __future__ import annotations

import pytest

from piagent.providers.chunked import ChunkedDecoder, ChunkingError

LINES = [b'{"a": 1}\n', b'{"b": "two"}\n', b"", b'{"done": true}\n']
BODY = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in LINES if p) + b"0\r\n\r\n"


def decode(reads: list[bytes]) -> tuple[list[bytes], bool]:
    decoder = ChunkedDecoder()
    return [decoder.feed(data) for data in reads], decoder.done


def test_several_chunks_in_one_read_are_one_payload():
    payloads, done = decode([BODY])
    assert payloads == [b"".join(LINES)]
    assert done


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_chunks_cut_anywhere_between_reads_are_reassembled(size):
    payloads, done = decode([BODY[i : i + size] for i in range(0, len(BODY), size)])
    assert b"".join(payloads) == b"".join(LINES)
    assert done


def test_each_read_gives_back_what_it_completes_at_once():
    first_chunk = BODY.index(b"\r\n", BODY.index(b"\r\n") + 2) + 2
    payloads, done = decode([BODY[:first_chunk], BODY[first_chunk:-5], BODY[-5:]])
    assert payloads == [LINES[0], LINES[1] + LINES[3], b""]
    assert done


def test_extensions_trailers_and_what_follows_the_end():
    body = b"5;name=value\r\nhello\r\n0\r\nExpires: never\r\n\r\nHTTP/1.1 200 OK\r\n"
    payloads, done = decode([body])
    assert payloads == [b"hello"] and done


def test_an_unfinished_body_is_not_done():
    assert decode([BODY[:-2]])[1] is False


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nhello\r\n", b"-5\r\nhello\r\n", b"0x5\r\nhello\r\n", b"3\r\nhello\r\n", b"1_0\r\n"],
    ids=["not-hex", "negative", "prefixed", "longer-than-its-size", "underscore"],
)
def test_broken_framing_raises(body):
    with pytest.raises(ChunkingError):
        decode([body])


def test_an_endless_size_line_raises():
    with pytest.raises(ChunkingError):
        decode([b"1" * 70000])


def test_chunks_with_upper_case_sizes_and_extensions_between_plain_ones():
    body = b"3\r\nabc\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n"
    payloads, done = decode([body])
    assert payloads == [b"abchello0123456789!"] and done


def test_a_plain_chunk_cut_short_is_handed_on_as_far_as_it_came():
    payloads, done = decode([b"5\r\nhel", b"lo\r\n3\r\nabc", b"\r\n0\r\n\r\n"])
    assert payloads == [b"hel", b"loabc", b""] and done
