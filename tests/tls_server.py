"""A small HTTPS model server on loopback, with a self-signed certificate made for the test."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.components import require_program


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (openssl): (certificate, key)."""
    openssl = require_program("openssl", "/usr/bin/openssl")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class _TagsHandler(BaseHTTPRequestHandler):
    """Ollama's model list, and nothing else."""

    models: tuple[str, ...] = ()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"models": [{"name": name} for name in self.models]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def https_ollama(folder: Path, models: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """An HTTPS server listing `models` at /api/tags: (its URL, the certificate it presents)."""
    cert, key = self_signed_certificate(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = type("Handler", (_TagsHandler,), {"models": models})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A client that refuses the certificate fails the handshake inside accept(), which
    # socketserver takes as a failed accept and passes over.
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
