"""Ollama's /api/chat over one pooled requests.Session."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from ..errors import UpstreamBusy, UpstreamError, UpstreamTimeout
from ..memory import Message
from .base import ChatStats, GenerationOptions
from .ndjson import MalformedLine, iter_ndjson

# Enough pooled connections for every stream a gevent worker holds open at once.
POOL_SIZE = 1000
_ERROR_BODY_LIMIT = 4096


class OllamaProvider:
    """Talks to one Ollama server; each open_chat checks the status before returning."""

    name = "ollama"

    def __init__(
        self,
        host: str,
        *,
        connect_timeout_s: float,
        reply_timeout_s: float,
        stream_idle_timeout_s: float,
    ) -> None:
        self.host = host.rstrip("/")
        self._connect_timeout_s = connect_timeout_s
        self._reply_timeout_s = reply_timeout_s
        self._stream_idle_timeout_s = stream_idle_timeout_s
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
        # Without a stream Ollama is silent until the reply is whole, so the read
        # timeout bounds the whole reply; with one it bounds each silence.
        read_timeout = self._stream_idle_timeout_s if stream else self._reply_timeout_s
        try:
            response = self._session.post(
                f"{self.host}/api/chat",
                json=body,
                stream=True,
                timeout=(self._connect_timeout_s, read_timeout),
            )
        except requests.ConnectTimeout:
            raise UpstreamTimeout(
                f"Ollama at {self.host} did not accept a connection within "
                f"{self._connect_timeout_s:g} s"
            ) from None
        except requests.ConnectionError:
            raise UpstreamError(
                f"Ollama is not reachable at {self.host}: is it running? (OLLAMA_HOST)"
            ) from None
        except requests.Timeout:
            raise UpstreamTimeout(f"Ollama did not answer within {read_timeout:g} s") from None
        except requests.RequestException as exc:
            raise UpstreamError(f"request to Ollama at {self.host} failed: {exc}") from None

        if response.status_code != 200:
            raise self._status_error(response, model)
        return OllamaChatStream(response, read_timeout)

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

    def __init__(self, response: requests.Response, read_timeout_s: float) -> None:
        self._response = response
        self._read_timeout_s = read_timeout_s
        self.stats: ChatStats | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            # chunk_size=None hands on each chunk the moment it is read.
            for event in iter_ndjson(self._response.iter_content(chunk_size=None)):
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
                raise UpstreamTimeout(
                    f"Ollama sent nothing for {self._read_timeout_s:g} s"
                ) from None
            raise UpstreamError(
                "the connection to Ollama broke in the middle of the reply"
            ) from None
        raise UpstreamError("Ollama's reply ended before its final line")

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
