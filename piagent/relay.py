"""Turning an open upstream reply into a client response, and remembering the exchange."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from itertools import chain

from .errors import StreamInterrupted, UpstreamError
from .providers.base import ChatStream

log = logging.getLogger("piagent")

Remember = Callable[[str], None]


def collect_reply(upstream: ChatStream, remember: Remember | None) -> str:
    """Read the whole reply, remember it when there is text, and always release upstream."""
    try:
        reply = "".join(upstream)
    finally:
        upstream.close()
    if remember and reply:
        remember(reply)
    return reply


def stream_reply(
    upstream: ChatStream, remember: Remember | None, conversation_id: str
) -> Iterator[bytes]:
    """Wait for the first fragment, then return the generator that relays the rest.

    Waiting means a failure before any text (a timeout, a broken first line) is raised
    here, before the response starts, and still gets its own status code.
    """
    fragments = iter(upstream)
    try:
        first = next(fragments, None)
    except BaseException:
        upstream.close()
        raise
    head = [] if first is None else [first]
    return _relay(chain(head, fragments), upstream, remember, conversation_id)


def _relay(
    fragments: Iterator[str],
    upstream: ChatStream,
    remember: Remember | None,
    conversation_id: str,
) -> Iterator[bytes]:
    """Yield each fragment as it arrives.

    The server asks for the next item only after writing the last, so a fragment
    counts as delivered once its yield returns. When the client leaves, the server
    closes this generator at a yield (GeneratorExit): what it saw is remembered. An
    upstream failure remembers nothing and escapes, so the server drops the
    connection without the final chunk and the client can tell the reply is cut.
    """
    delivered: list[str] = []
    failed = False
    try:
        for fragment in fragments:
            yield fragment.encode()
            delivered.append(fragment)
    except UpstreamError as exc:
        failed = True
        log.warning("stream %s cut short after it started: %s", conversation_id, exc.detail)
        raise StreamInterrupted(exc.detail) from None
    except Exception:
        failed = True
        raise
    finally:
        try:
            # Remember before closing: whoever sees the upstream close may ask again at once.
            if remember and delivered and not failed:
                remember("".join(delivered))
        finally:
            upstream.close()
