"""Any OpenAI-compatible server's /chat/completions: llama.cpp, LM Studio, vLLM, a hosted API."""

from __future__ import annotations

import json
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
from .sse import MalformedEvent, iter_sse_data

SERVER = "the OpenAI-compatible server"
_DONE = "[DONE]"


class OpenAIProvider:
    """Talks to one OpenAI-compatible server; each open_chat checks the status first."""

    name = "openai"

    def __init__(self, base_url: str, timeouts: Timeouts, *, api_key: str | None) -> None:
        self._client = UpstreamClient(SERVER, base_url, "OPENAI_BASE_URL", timeouts)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def open_chat(
        self,
        messages: Sequence[Message],
        model: str,
        options: GenerationOptions,
        *,
        stream: bool,
    ) -> OpenAIReply:
        """Send the conversation; return the reply once the server has answered 200."""
        # The context size is the server's own setting: the API has no field for it.
        body: dict[str, Any] = {
            "model": model,
            "messages": wire_messages(messages),
            "stream": stream,
            "temperature": options.temperature,
            "max_tokens": options.max_tokens,
        }
        headers = dict(self._headers)
        if stream:
            body["stream_options"] = {"include_usage": True}
            # A compressed stream may be held back by the decoder: ask for it plain.
            headers |= {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        response = self._client.post("/chat/completions", body, stream=stream, headers=headers)
        if response.status_code != 200:
            raise _status_error(response, model, self._client.base_url)
        content_type = response.headers.get("Content-Type", "")
        if stream and not content_type.startswith("text/event-stream"):
            response.close()
            raise UpstreamError(
                f"{SERVER} answered {content_type or 'no content type'} instead of an event stream"
            )
        return OpenAIReply(response, stream=stream)

    def check_ready(self, models: Collection[str], timeout_s: float) -> None:
        """Raise UpstreamError saying what to do unless /models lists every model."""
        listing = self._client.get_json("/models", timeout_s, headers=self._headers)
        try:
            served = {entry["id"] for entry in listing["data"]}
        except (KeyError, TypeError):
            raise UpstreamError(f"{SERVER} sent a model list piagent cannot read") from None
        missing = [model for model in models if model not in served]
        if missing:
            listed = ", ".join(sorted(served)) or "none"
            raise UpstreamError(
                f"{SERVER} at {self._client.base_url} does not serve the model(s) "
                f"{', '.join(missing)} (it lists: {listed}); check OPENAI_MODEL"
            )

    def load_model(self, model: str) -> None:
        """Nothing to do: an OpenAI-compatible server loads its models itself."""


class OpenAIReply:
    """The text of one reply: events relayed as they arrive, or one JSON body."""

    def __init__(self, response: UpstreamResponse, *, stream: bool) -> None:
        self._response = response
        self._stream = stream
        self.stats: ChatStats | None = None

    def __iter__(self) -> Iterator[list[str]]:
        try:
            yield from self._events() if self._stream else self._whole()
        except MalformedEvent as exc:
            raise UpstreamError(f"{SERVER} sent a reply piagent cannot read ({exc})") from None

    def close(self) -> None:
        """Close the HTTP response, which tells the server to stop generating."""
        self._response.close()

    def _events(self) -> Iterator[list[str]]:
        events = _EventReader()
        for batch in iter_sse_data(self._response.reads()):
            fragments: list[str] = []
            failure: Exception | None = None
            try:
                events.read(batch, fragments)
            except (UpstreamError, MalformedEvent) as exc:
                failure = exc
            # What came before a failing event is handed on before the failure.
            if fragments:
                yield fragments
            if failure is not None:
                raise failure
            if events.ended:
                break
        else:
            # Some servers end the stream without [DONE]; the finish reason still tells
            # a whole reply from one cut short.
            if events.finish_reason is None:
                raise UpstreamError(f"the reply from {SERVER} ended before its final event")
        self.stats = _stats(events.usage, events.finish_reason)

    def _whole(self) -> Iterator[list[str]]:
        reply = _parse(b"".join(self._response.reads()))
        choices = _choices(reply)
        if not choices:
            raise MalformedEvent(f"no choices in {str(reply)[:80]}")
        text = _text(choices[0], "message")
        self.stats = _stats(_usage(reply), _finish_reason(choices[0]))
        if text:
            yield [text]


class _EventReader:
    """What a stream's events said so far: their text, the usage, the finish reason."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self.ended = False

    def read(self, batch: list[str], fragments: list[str]) -> None:
        """Add the text of each event's choices to `fragments`, up to [DONE]."""
        for data in batch:
            if data == _DONE:
                self.ended = True
                return
            chunk = _parse(data)
            self.usage = _usage(chunk) or self.usage
            for choice in _choices(chunk):
                self.finish_reason = _finish_reason(choice) or self.finish_reason
                if text := _text(choice, "delta"):
                    fragments.append(text)


def _parse(data: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise MalformedEvent(f"not JSON: {data[:80]!r}") from None
    if not isinstance(value, dict):
        raise MalformedEvent(f"not a JSON object: {data[:80]!r}")
    if "error" in value:
        raise UpstreamError(f"{SERVER} failed in the middle of the reply: {_message(value)}")
    return value


def _choices(obj: dict[str, Any]) -> list[dict[str, Any]]:
    choices = obj.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise MalformedEvent(f"choices is not a list of objects in {str(obj)[:80]}")
    return choices


def _text(choice: dict[str, Any], key: str) -> str:
    message = choice.get(key) or {}
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        raise MalformedEvent(f"{key}.content is not text in {str(choice)[:80]}")
    return content or ""


def _finish_reason(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) else None


def _usage(obj: dict[str, Any]) -> dict[str, Any]:
    usage = obj.get("usage")
    return usage if isinstance(usage, dict) else {}


def _stats(usage: dict[str, Any], finish_reason: str | None) -> ChatStats:
    return ChatStats(
        prompt_tokens=int_field(usage, "prompt_tokens"),
        completion_tokens=int_field(usage, "completion_tokens"),
        done_reason=finish_reason,
    )


def _message(body: Any) -> str:
    """The human part of an error body: OpenAI's {"error": {"message"}} or a near variant."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail")
        if isinstance(error, str) and error:
            return error
    return "no error message"


def _status_error(response: UpstreamResponse, model: str, base_url: str) -> UpstreamError:
    """Turn an error status, and the message in its body, into words a user can act on."""
    status = response.status_code
    retry_after = response.headers.get("Retry-After", "")
    body = response.error_body()
    message = _message(body)
    if status in (401, 403):
        return UpstreamError(
            f"{SERVER} refused the request (HTTP {status}: {message}); check OPENAI_API_KEY"
        )
    if status == 404:
        code = body.get("error") if isinstance(body, dict) else None
        code = code.get("code") if isinstance(code, dict) else None
        if "model" in f"{message} {code}".lower():
            return UpstreamError(
                f"{SERVER} does not have the model {model!r} ({message}); "
                "check OPENAI_MODEL or the agent's model"
            )
        return UpstreamError(
            f"{SERVER} has no {base_url}/chat/completions (HTTP 404: {message}); "
            "check OPENAI_BASE_URL, which usually ends in /v1"
        )
    if status in (429, 503):
        return UpstreamBusy(
            f"{SERVER} is busy (HTTP {status}: {message}); try again shortly",
            retry_after_s=max(1, int(retry_after)) if retry_after.isdigit() else 5,
        )
    if status in REFUSED_REQUEST_STATUSES:
        return UpstreamRejected(f"{SERVER} refused the request (HTTP {status}: {message})")
    return UpstreamError(f"{SERVER} answered HTTP {status}: {message}")
