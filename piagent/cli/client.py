"""HTTP to a piagent server: chats (streamed as NDJSON events or whole), agents, conversations."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any

import requests

from ..providers.ndjson import MalformedLine, iter_ndjson
from .errors import Refused, StreamFailed, Unreachable, one_line

DEFAULT_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT_S = 10.0
# A stream is silent while it waits for a place in piagent's queue and for the model's
# first token (QUEUE_TIMEOUT_S + FIRST_TOKEN_TIMEOUT_S, 150 s by default); piagent times
# out the model itself, so this only guards against a server that never answers.
READ_TIMEOUT_S = 600.0
NDJSON = "application/x-ndjson"
_KEY_HINT = " (piagent sends the key given with --key or PIAGENT_API_KEY)"


class PiagentClient:
    """One piagent server at `url`, with an API key when it needs one."""

    def __init__(self, url: str, key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._session = requests.Session()
        if key:
            self._session.headers["Authorization"] = f"Bearer {key}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        read_timeout_s: float = READ_TIMEOUT_S,
        check: bool = True,
    ) -> requests.Response:
        """Send one request; raise Unreachable, or (with `check`) Refused for an error status."""
        try:
            response = self._session.request(
                method,
                f"{self.url}{path}",
                json=json,
                headers=headers,
                stream=stream,
                timeout=(CONNECT_TIMEOUT_S, read_timeout_s),
            )
        except requests.ConnectTimeout:
            raise Unreachable(
                f"piagent at {self.url} did not accept a connection within {CONNECT_TIMEOUT_S:g} s",
                hint="; is the address right? (--url or PIAGENT_URL)",
            ) from None
        except requests.ConnectionError as exc:
            raise Unreachable(
                f"cannot reach piagent at {self.url} ({_reason(exc)})",
                hint="; is it running? (give its address with --url or PIAGENT_URL)",
            ) from None
        except requests.Timeout:
            raise Unreachable(
                f"piagent at {self.url} did not answer within {read_timeout_s:g} s"
            ) from None
        except requests.RequestException as exc:
            raise Unreachable(f"request to piagent at {self.url} failed: {exc}") from None
        if check and response.status_code >= 400:
            raise refusal(response)
        return response

    def open_reply(self, message: str, agent: str | None, conversation_id: str | None) -> Reply:
        """Send a message and return its reply as it streams in (after the status is known)."""
        response = self.request(
            "POST",
            "/chat",
            json=_chat_body(message, agent, conversation_id, stream=True),
            headers={"Accept": NDJSON, **_conversation_header(conversation_id)},
            stream=True,
        )
        return Reply(response)

    def whole_reply(
        self, message: str, agent: str | None, conversation_id: str | None
    ) -> dict[str, Any]:
        """Send a message and return piagent's JSON reply once it is complete."""
        response = self.request(
            "POST",
            "/chat",
            json=_chat_body(message, agent, conversation_id, stream=False),
            headers=_conversation_header(conversation_id),
        )
        return response.json()

    def agents(self) -> list[str]:
        """The names of the server's agents."""
        return list(self.request("GET", "/agents").json()["agents"])

    def conversations(self) -> list[dict[str, Any]] | None:
        """The caller's conversations, newest first; None when the server has no such list."""
        try:
            return list(self.request("GET", "/conversations").json()["conversations"])
        except Refused as exc:
            if exc.status in (404, 405):  # a piagent from before GET /conversations
                return None
            raise

    def transcript(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every remembered message of a conversation, oldest first."""
        response = self.request(
            "GET",
            f"/conversations/{conversation_id}",
            headers=_conversation_header(conversation_id),
        )
        return list(response.json()["messages"])

    def forget(self, conversation_id: str) -> None:
        """Delete a conversation from the server's memory."""
        self.request(
            "DELETE",
            f"/conversations/{conversation_id}",
            headers=_conversation_header(conversation_id),
        )


class Reply:
    """A streamed reply: iterate for its text; `done` is the final event once it is whole."""

    def __init__(self, response: requests.Response) -> None:
        self._response = response
        # Known from the headers, so even a reply stopped early can be continued.
        self.conversation_id: str | None = response.headers.get("X-Conversation-Id")
        self.done: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            for events in iter_ndjson(self._response.iter_content(chunk_size=None)):
                for event in events:  # the events of one read
                    kind = event.get("type")
                    if kind == "delta":
                        yield str(event.get("text", ""))
                    elif kind == "done":
                        self.done = event
                        self.conversation_id = event.get("conversation_id") or self.conversation_id
                        return
                    elif kind == "error":
                        raise StreamFailed(one_line(event.get("detail", "the reply failed")))
        except MalformedLine as exc:
            raise Unreachable(f"piagent sent a line that is not an event: {exc}") from None
        except requests.RequestException:
            raise Unreachable(
                "the connection to piagent broke before the reply was complete"
            ) from None
        raise Unreachable("the reply ended before it was complete (the connection closed)")

    def close(self) -> None:
        """Close the connection; piagent then stops the model generating this reply."""
        self._response.close()

    def __enter__(self) -> Reply:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def refusal(response: requests.Response) -> Refused:
    """The Refused error for an error response, in the server's words when it gave some."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = one_line(body["detail"])
    else:
        # Not piagent's JSON: a proxy in between, or another server at that address.
        text = one_line(response.text[:200]) if response.text else ""
        detail = f"HTTP {response.status_code} {response.reason or ''} from {response.url}"
        detail = one_line(f"{detail}: {text}" if text else detail)
    if response.status_code == 401:
        detail += _KEY_HINT
    return Refused(response.status_code, detail, retry_after=response.headers.get("Retry-After"))


def _chat_body(
    message: str, agent: str | None, conversation_id: str | None, *, stream: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "stream": stream}
    if agent:
        body["agent"] = agent
    if conversation_id:
        body["conversation_id"] = conversation_id
    return body


def _conversation_header(conversation_id: str | None) -> dict[str, str]:
    # Also in a header, so proxies and servers can route or log by it without the body.
    return {"X-Conversation-Id": conversation_id} if conversation_id else {}


def _reason(exc: requests.ConnectionError) -> str:
    """The innermost cause of a connection failure, e.g. "Connection refused"."""
    cause = exc.args[0] if exc.args else None
    cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the real one
    while isinstance(cause, BaseException):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return "the connection failed"
