"""Ollama's /api/chat over one pooled requests.Session."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any

from ..errors import UpstreamBusy, UpstreamError, UpstreamRejected
from ..messages import Message
from .base import ChatStats, GenerationOptions, Timeouts
from .http import (
    REFUSED_REQUEST_STATUSES,
    UpstreamClient,
    UpstreamResponse,
    int_field,
    wire_messages,
)
from .ndjson import MalformedLine, iter_ndjson


class OllamaProvider:
    """Talks to one Ollama server; each open_chat checks the status before returning."""

    name = "ollama"

    def __init__(self, host: str, timeouts: Timeouts, *, keep_alive: str | None = None) -> None:
        self._client = UpstreamClient("Ollama", host, "OLLAMA_HOST", timeouts)
        self._keep_alive = {} if keep_alive is None else {"keep_alive": _keep_alive(keep_alive)}

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
            "messages": wire_messages(messages),
            "stream": stream,
            "options": {
                "temperature": options.temperature,
                "num_ctx": options.ctx_tokens,
                "num_predict": options.max_tokens,
            },
            **self._keep_alive,
        }
        response = self._client.post("/api/chat", body, stream=stream, headers={})
        if response.status_code != 200:
            raise _status_error(response, model)
        return OllamaChatStream(response)

    def check_ready(self, models: Collection[str], timeout_s: float) -> None:
        """Raise UpstreamError saying what to do unless /api/tags lists every model."""
        listing = self._client.get_json("/api/tags", timeout_s)
        try:
            pulled = {_with_tag(entry["name"]) for entry in listing["models"]}
        except (KeyError, TypeError):
            raise UpstreamError(
                f"Ollama at {self._client.base_url} sent a model list piagent cannot read"
            ) from None
        missing = [model for model in models if _with_tag(model) not in pulled]
        if missing:
            raise UpstreamError(
                "; ".join(f"model {m} is not pulled: run ollama pull {m}" for m in missing)
            )

    def load_model(self, model: str) -> None:
        """Ask Ollama to load `model` for OLLAMA_KEEP_ALIVE: a chat without messages."""
        body = {"model": model, "messages": [], **self._keep_alive}
        # As a stream, the answer may take as long as a first token: the model's load.
        response = self._client.post("/api/chat", body, stream=True, headers={})
        if response.status_code != 200:
            raise _status_error(response, model)
        response.close()


def _keep_alive(text: str) -> int | float | str:
    """Ollama reads a JSON number as seconds and a string as a Go duration ("5m")."""
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def _with_tag(model: str) -> str:
    """Ollama's full model name: a name without a tag means its `latest` tag."""
    return model if ":" in model else f"{model}:latest"


def _status_error(response: UpstreamResponse, model: str) -> UpstreamError:
    """Read Ollama's `{"error": ...}` body and turn the status into our error."""
    body = response.error_body()
    message = str(body["error"]) if isinstance(body, dict) and "error" in body else None
    message = message or "no error message"
    status = response.status_code
    if status == 404:
        return UpstreamError(
            f"Ollama does not have the model {model!r} ({message}); "
            f"pull it on the Ollama host with: ollama pull {model}"
        )
    if status == 503:
        return UpstreamBusy(f"Ollama is busy ({message}); try again shortly")
    if status in REFUSED_REQUEST_STATUSES:
        return UpstreamRejected(f"Ollama refused the request (HTTP {status}: {message})")
    return UpstreamError(f"Ollama answered HTTP {status}: {message}")


class OllamaChatStream:
    """The text fragments of one /api/chat reply, read line by line as they arrive."""

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response
        self.stats: ChatStats | None = None

    def __iter__(self) -> Iterator[list[str]]:
        try:
            for events in iter_ndjson(self._response.reads()):
                fragments: list[str] = []
                failure: Exception | None = None
                try:
                    self._read_events(events, fragments)
                except (UpstreamError, MalformedLine) as exc:
                    failure = exc
                # What came before a failing line is handed on before the failure.
                if fragments:
                    yield fragments
                if failure is not None:
                    raise failure
                if self.stats is not None:
                    return
        except MalformedLine as exc:
            raise UpstreamError(f"Ollama sent a reply piagent cannot read ({exc})") from None
        raise UpstreamError("Ollama's reply ended before its final line")

    def _read_events(self, events: list[dict[str, Any]], fragments: list[str]) -> None:
        """Add each event's text to `fragments`, up to the final event (which sets the stats)."""
        for event in events:
            if text := _event_text(event):
                fragments.append(text)
            if event.get("done") is True:
                self.stats = _event_stats(event)
                return

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
    return ChatStats(
        prompt_tokens=int_field(event, "prompt_eval_count"),
        completion_tokens=int_field(event, "eval_count"),
        done_reason=event.get("done_reason") if isinstance(event.get("done_reason"), str) else None,
        eval_duration_ns=int_field(event, "eval_duration"),
    )
