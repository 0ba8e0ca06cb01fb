"""HTTP plumbing shared by the providers: one pooled session, timeouts, failures in words."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ReadTimeoutError

from ..errors import UpstreamError, UpstreamTimeout
from ..messages import Message
from ..urls import scrub_credentials, without_credentials
from .base import Timeouts
from .chunked import ChunkedDecoder, ChunkingError
from .connection_faults import unreachable
from .deadline import ReadDeadline
from .transport import OneWriteAdapter

# What a model server answers when the request itself is at fault (a bad parameter, a
# prompt longer than its context: llama.cpp's 400), as opposed to the server failing.
REFUSED_REQUEST_STATUSES = frozenset({400, 413, 422})
# Enough pooled connections for every stream a gevent worker holds open at once.
POOL_SIZE = 1000
_ERROR_BODY_LIMIT = 4096
# The most one read takes: far more than a burst of tokens, so a relay that fell behind
# catches up in one read.
_READ_SIZE = 65536
_JSON = {"Content-Type": "application/json"}


class UpstreamClient:
    """POSTs to one model server and turns every transport failure into an UpstreamError.

    `server` is how messages name it ("Ollama"), `variable` the setting that points at it.
    `base_url` is the address as messages show it: without a user name or password.
    """

    def __init__(self, server: str, base_url: str, variable: str, timeouts: Timeouts) -> None:
        self.server = server
        self._url = base_url.rstrip("/")
        self.base_url = without_credentials(self._url)
        self._variable = variable
        self._timeouts = timeouts
        self._session = requests.Session()
        adapter = OneWriteAdapter(pool_connections=1, pool_maxsize=POOL_SIZE)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # The server's address is fixed, so what the environment says about it (HTTP(S)_PROXY,
        # NO_PROXY, REQUESTS_CA_BUNDLE) is read once here; requests would otherwise scan the
        # whole environment on every call.
        environment = self._session.merge_environment_settings(self._url, {}, None, None, None)
        self._proxies = environment["proxies"]
        self._verify = environment["verify"]
        self._templates: dict[tuple[object, ...], requests.PreparedRequest] = {}

    def post(
        self, path: str, body: dict[str, Any], *, stream: bool, headers: dict[str, str]
    ) -> UpstreamResponse:
        """Send `body` as JSON; return the response once its headers are in."""
        limits = self._timeouts
        started = time.monotonic()
        # A server may send its headers only with the first token, so the first read
        # waits for the model to load and read the prompt; without a stream it waits
        # for the whole reply.
        if stream:
            first_read_s = min(limits.first_token_s, limits.stream_total_s)
            idle_s, total_s = limits.stream_idle_s, limits.stream_total_s
        else:
            first_read_s = idle_s = total_s = limits.reply_s
        # Session.send skips what Session.post adds per call (merging settings, reading
        # netrc), and given the proxies it skips scanning the environment for them: most
        # of piagent's own time per chat.
        request = self._prepared(path, headers, json.dumps(body).encode())
        try:
            response = self._session.send(
                request,
                stream=True,
                timeout=(limits.connect_s, first_read_s),
                allow_redirects=False,
                proxies=self._proxies,
                verify=self._verify,
            )
        except requests.ConnectTimeout:
            raise UpstreamTimeout(
                f"{self.server} at {self.base_url} did not accept a connection within "
                f"{limits.connect_s:g} s"
            ) from None
        except requests.ConnectionError as exc:
            raise unreachable(exc, self.server, self._url, self._variable, self._proxies) from None
        except requests.Timeout:
            waited = "produced no first token" if stream else "did not answer"
            raise UpstreamTimeout(f"{self.server} {waited} within {first_read_s:g} s") from None
        except requests.RequestException as exc:
            raise UpstreamError(
                f"request to {self.server} at {self.base_url} failed: {scrub_credentials(str(exc))}"
            ) from None
        deadline = ReadDeadline(
            response, server=self.server, idle_s=idle_s, deadline=started + total_s
        )
        return UpstreamResponse(response, deadline, self.server)

    def _prepared(
        self, path: str, headers: dict[str, str], data: bytes
    ) -> requests.PreparedRequest:
        """The POST as Request.prepare() makes it, from a copy of one prepared per path.

        Preparing parses and re-quotes the URL, reads credentials from it and builds a
        cookie jar, the same every time.
        """
        key = (path, *headers.items())
        template = self._templates.get(key)
        if template is None:
            template = requests.Request(
                "POST", f"{self._url}{path}", data=b"", headers={**_JSON, **headers}
            ).prepare()
            self._templates[key] = template
        request = requests.PreparedRequest()
        request.method, request.url, request.body = template.method, template.url, data
        request.headers = template.headers.copy()  # keeps the headers' order
        request.headers["Content-Length"] = str(len(data))
        return request

    def get_json(
        self, path: str, timeout_s: float, *, headers: dict[str, str] | None = None
    ) -> Any:
        """GET a small JSON document (a model list) within `timeout_s`, or raise UpstreamError."""
        try:
            response = self._session.get(
                f"{self._url}{path}",
                headers=headers,
                timeout=timeout_s,
                proxies=self._proxies,
                verify=self._verify,
            )
        except requests.Timeout:
            raise UpstreamTimeout(
                f"{self.server} at {self.base_url} did not answer within {timeout_s:g} s"
            ) from None
        except requests.ConnectionError as exc:
            raise unreachable(exc, self.server, self._url, self._variable, self._proxies) from None
        except requests.RequestException as exc:
            raise UpstreamError(
                f"request to {self.server} at {self.base_url} failed: {scrub_credentials(str(exc))}"
            ) from None
        if response.status_code != 200:
            raise UpstreamError(
                f"{self.server} at {self.base_url} answered HTTP {response.status_code} for {path}"
            )
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(
                f"{self.server} at {self.base_url} sent a reply to {path} piagent cannot read"
            ) from None


class UpstreamResponse:
    """A model server's response whose body is read under the call's timeouts."""

    def __init__(self, response: requests.Response, deadline: ReadDeadline, server: str) -> None:
        self._response = response
        self._deadline = deadline
        self._server = server

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        return self._response.status_code

    @property
    def headers(self) -> CaseInsensitiveDict[str]:
        """The response headers."""
        return self._response.headers

    def reads(self) -> Iterator[bytes]:
        """The body as it arrives: each item is all that had arrived when it was read.

        A broken connection, a timeout or broken framing raises UpstreamError.
        """
        try:
            if self._plain_chunked():
                yield from self._chunked_reads()
            else:
                yield from self._content()
        except TimeoutError:
            raise self._deadline.timeout_error() from None
        except requests.RequestException as exc:
            # A read timeout inside a body surfaces as a ConnectionError wrapping urllib3's.
            if exc.args and isinstance(exc.args[0], ReadTimeoutError):
                raise self._deadline.timeout_error() from None
            raise self._broken() from None
        except (OSError, ValueError):  # a reset, broken framing, a file closed meanwhile
            raise self._broken() from None

    def _plain_chunked(self) -> bool:
        raw = self._response.raw
        encoding = raw.headers.get("Content-Encoding", "identity").lower()
        return bool(raw.chunked) and encoding in ("", "identity") and raw.supports_chunked_reads()

    def _chunked_reads(self) -> Iterator[bytes]:
        # The first read goes through http.client's buffered socket file, which may
        # already hold the body's start (read with the headers): read1 hands back all it
        # holds, or else what one socket read brings, and never waits for more. Its
        # buffer is then empty for good, so the reads after it go to the socket itself,
        # a layer of Python fewer for each.
        body = self._response.raw._fp.fp
        connection = self._response.raw.connection
        sock = connection.sock if connection is not None else None
        if body is None or sock is None:
            return  # closed already: nothing more to read, as urllib3 would say
        decoder = ChunkedDecoder()
        after_read = self._deadline.after_read
        read = body.read1
        while not decoder.done:
            data = read(_READ_SIZE)
            if not data:
                raise ChunkingError("the body ended before its last chunk")
            read = sock.recv
            after_read()
            if payload := decoder.feed(data):
                yield payload

    def _content(self) -> Iterator[bytes]:
        # Anything else (a length, a compressed body) through requests, as it arrives.
        for data in self._response.iter_content(chunk_size=None):
            self._deadline.after_read()
            if data:
                yield data

    def _broken(self) -> UpstreamError:
        return UpstreamError(f"the connection to {self._server} broke in the middle of the reply")

    def error_body(self) -> Any:
        """The start of an error response's body as JSON (None if it is not), then close."""
        try:
            return json.loads(self._response.raw.read(_ERROR_BODY_LIMIT, decode_content=True))
        except Exception:
            return None
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection, which tells the server to stop generating for us."""
        self._response.close()


def wire_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """The conversation as both APIs take it: a list of {role, content}."""
    return [{"role": m.role, "content": m.content} for m in messages]


def int_field(obj: Mapping[str, Any], key: str) -> int | None:
    """A count from a server's JSON, or None when it is missing or not an integer."""
    value = obj.get(key)
    return value if isinstance(value, int) else None
