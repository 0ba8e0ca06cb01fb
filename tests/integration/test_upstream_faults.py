"""Connection faults named as what they are: an untrusted TLS certificate, a proxy that
refuses, a host name that does not resolve, each with the variable to check.

Real parts: an HTTPS server on loopback with a certificate made for the test, a proxy
variable pointing at a closed loopback port (piagent under gunicorn with that
environment), and a name under the reserved .invalid domain that glibc refuses before
any query (a label may not start with a hyphen), so no network is asked.
"""

from __future__ import annotations

import pytest
import requests

from piagent.app import create_app
from piagent.settings import Settings
from tests.conftest import MODEL
from tests.servers import free_port, piagent_under_gunicorn
from tests.tls_server import https_ollama

UNRESOLVABLE = "-piagent.invalid"


def chat_and_ready(settings: Settings) -> tuple[dict, dict]:
    """The 502 of a chat and the 503 of /ready, both failing to connect."""
    client = create_app(settings).test_client()
    chat = client.post("/chat", json={"message": "hi"})
    ready = client.get("/ready")
    assert (chat.status_code, ready.status_code) == (502, 503)
    return chat.get_json(), ready.get_json()


def test_untrusted_tls_certificate_is_named_with_the_variable_to_check(tmp_path):
    with https_ollama(tmp_path, (MODEL,)) as (url, _):
        for body in chat_and_ready(Settings(ollama_host=url)):
            detail = body["detail"]
            assert detail.startswith(f"Ollama at {url} cannot be reached: certificate not trusted")
            assert "self-signed certificate" in detail
            assert "check OLLAMA_HOST" in detail and "REQUESTS_CA_BUNDLE" in detail


def test_the_ca_bundle_the_detail_names_makes_the_certificate_trusted(tmp_path, monkeypatch):
    with https_ollama(tmp_path, (MODEL,)) as (url, cert):
        # requests' own variable, read once per model server as the proxies are.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        client = create_app(Settings(ollama_host=url)).test_client()
        assert client.get("/ready").status_code == 200


def test_unknown_host_name_is_named_with_the_variable_to_check():
    host = f"http://{UNRESOLVABLE}:11434"
    for body in chat_and_ready(Settings(ollama_host=host)):
        assert body["detail"] == (
            f"Ollama at {host} cannot be reached: host name {UNRESOLVABLE} not found (DNS); "
            "check OLLAMA_HOST"
        )


def test_a_refused_connection_still_asks_whether_the_server_runs():
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for body in chat_and_ready(Settings(ollama_host=host)):
        assert body["detail"] == f"Ollama is not reachable at {host}: is it running? (OLLAMA_HOST)"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "all_proxy"])
def test_refused_proxy_is_named_with_its_variable(fake, tmp_path, variable):
    proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with piagent_under_gunicorn(fake, tmp_path, **{variable: proxy}) as server:
        reply = requests.post(f"{server.url}/chat", json={"message": "hi"}, timeout=10)
    assert reply.status_code == 502
    assert reply.json()["detail"] == (
        f"Ollama at {fake.url} cannot be reached: proxy refused (the proxy {proxy} from "
        f"{variable}: Connection refused); check {variable}, or add the host of OLLAMA_HOST "
        "to NO_PROXY"
    )
    assert not fake.requests  # nothing went around the proxy
