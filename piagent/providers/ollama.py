"""Ollama's /api/chat over one pooled requests.Session."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from ..errors import UpstreamBusy, UpstreamError, UpstreamTimeout
from ..memory import Message
from .base import ChatStats, GenerationOptions, Timeouts
from .deadline import ReadDeadline
from .ndjson import MalformedLine, iter_ndjson

# Enough pooled connections for every stream a gevent worker holds open at once.
POOL_SIZE = 1000
_ERROR_BODY_LIMIT = 4096


class OllamaProvider:
    """Talks to one Ollama server; each open_chat checks the status before returning."""

    name = "ollama"

    def __init__(self, host: str, timeouts: Timeouts) -> None:
        self.host = host.rstrip("/")
        self._timeouts = timeouts
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def open_chat(
        self,
        messages: Sequence[Message],
        model: str,
        options: GenerationOptions,
        *,
        stream: bool,
    ) -> OllamaChatStream:
        """Send the conversation; return the reply once Ollama has answered 200."""
        body = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": stream,
            "options": {
                "temperature": options.temperature,
                "num_ctx": options.ctx_tokens,
                "num_predict": options.max_tokens,
            },
        }
        limits = self._timeouts
        started = time.monotonic()
        # Ollama sends its headers with the first token, so the first read waits for the
        # model to load and read the prompt; without a stream it waits for the whole reply.
        if stream:
            first_read_s = min(limits.first_token_s, limits.stream_total_s)
            idle_s, total_s = limits.stream_idle_s, limits.stream_total_s
        else:
            first_read_s = idle_s = total_s = limits.reply_s
        # Session.send skips what Session.post adds per call (merging settings, scanning
        # the environment for proxies and netrc): most of piagent's own time per chat.
        # Ollama is local, so none of it applies.
        request = requests.Request(
            "POST",
            f"{self.host}/api/chat",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        ).prepare()
        try:
            response = self._session.send(
                request,
                stream=True,
                timeout=(limits.connect_s, first_read_s),
                allow_redirects=False,
            )
        except requests.ConnectTimeout:
            raise UpstreamTimeout(
                f"Ollama at {self.host} did not accept a connection within {limits.connect_s:g} s"
            ) from None
        except requests.ConnectionError:
            raise UpstreamError(
                f"Ollama is not reachable at {self.host}: is it running? (OLLAMA_HOST)"
            ) from None
        except requests.Timeout:
            waited = "produced no first token" if stream else "did not answer"
            raise UpstreamTimeout(f"Ollama {waited} within {first_read_s:g} s") from None
        except requests.RequestException as exc:
            raise UpstreamError(f"request to Ollama at {self.host} failed: {exc}") from None

        if response.status_code != 200:
            raise self._status_error(response, model)
        deadline = ReadDeadline(
            response, server="Ollama", idle_s=idle_s, deadline=started + total_s
        )
        return OllamaChatStream(response, deadline)

    def _status_error(self, response: requests.Response, model: str) -> UpstreamError:
        """Read Ollama's `{"error": ...}` body and turn the status into our error."""
        try:
            raw = response.raw.read(_ERROR_BODY_LIMIT, decode_content=True)
            message = str(json.loads(raw)["error"])
        except Exception:
            message = "no error message"
        finally:
            response.close()
        status = response.status_code
        if status == 404:
            return UpstreamError(
                f"Ollama does not have the model {model!r} ({message}); "
                f"pull it on the Ollama host with: ollama pull {model}"
            )
        if status == 503:
            return UpstreamBusy(f"Ollama is busy ({message}); try again shortly")
        return UpstreamError(f"Ollama answered HTTP {status}: {message}")


class OllamaChatStream:
    """The text fragments of one /api/chat reply, read line by line as they arrive."""

    def __init__(self, response: requests.Response, deadline: ReadDeadline) -> None:
        self._response = response
        self._deadline = deadline
        self.stats: ChatStats | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            # chunk_size=None hands on each chunk the moment it is read.
            for event in iter_ndjson(self._timed_chunks()):
                text = _event_text(event)
                if event.get("done") is True:
                    self.stats = _event_stats(event)
                if text:
                    yield text
                if self.stats is not None:
                    return
        except MalformedLine as exc:
            raise UpstreamError(f"Ollama sent a reply piagent cannot read ({exc})") from None
        except requests.RequestException as exc:
            if exc.args and isinstance(exc.args[0], ReadTimeoutError):
                raise self._deadline.timeout_error() from None
            raise UpstreamError(
                "the connection to Ollama broke in the middle of the reply"
            ) from None
        raise UpstreamError("Ollama's reply ended before its final line")

    def _timed_chunks(self) -> Iterator[bytes]:
        for chunk in self._response.iter_content(chunk_size=None):
            self._deadline.after_read()
            yield chunk

    def close(self) -> None:
        """Close the HTTP response, which stops Ollama generating for us."""
        self._response.close()


def _event_text(event: dict[str, Any]) -> str:
    if "error" in event:
        raise UpstreamError(f"Ollama failed in the middle of the reply: {event['error']}")
    message = event.get("message")
    content = message.get("content", "") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise MalformedLine(f"no message.content in {str(event)[:80]}")
    return content


def _event_stats(event: dict[str, Any]) -> ChatStats:
    def count(key: str) -> int | None:
        value = event.get(key)
        return value if isinstance(value, int) else None

    return ChatStats(
        prompt_tokens=count("prompt_eval_count"),
        completion_tokens=count("eval_count"),
        done_reason=event.get("done_reason") if isinstance(event.get("done_reason"), str) else None,
        total_duration_ns=count("total_duration"),
        eval_duration_ns=count("eval_duration"),
    )
