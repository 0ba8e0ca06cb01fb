"""The model servers' connections send a request's header block and body in one write."""

from __future__ import annotations

import pytest
from urllib3.connection import HTTPConnection

from piagent.providers.transport import OneWriteAdapter


class Recorder:
    """Stands in for a connected socket and keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def settimeout(self, timeout: float | None) -> None:
        pass


def sent(connection_class: type[HTTPConnection], **request) -> list[bytes]:
    connection = connection_class("127.0.0.1", 9)
    connection.sock = Recorder()
    connection.request(**request)
    return connection.sock.writes


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_request_with_a_body_is_one_write_of_the_same_bytes(scheme):
    pools = OneWriteAdapter().poolmanager.pool_classes_by_scheme
    request = {"method": "POST", "url": "/api/chat", "body": b'{"a": 1}', "headers": {"X": "y"}}
    plain = sent(HTTPConnection, **request)
    assert len(plain) == 2  # what http.client does by itself: the header block, then the body
    assert sent(pools[scheme].ConnectionCls, **request) == [b"".join(plain)]


def test_a_request_without_a_body_still_sends_its_header_block():
    connection_class = OneWriteAdapter().poolmanager.pool_classes_by_scheme["http"].ConnectionCls
    request = {"method": "GET", "url": "/api/tags", "body": None}
    assert sent(connection_class, **request) == sent(HTTPConnection, **request)
    request = {"method": "POST", "url": "/api/chat", "body": b""}
    assert sent(connection_class, **request) == sent(HTTPConnection, **request)
