"""schemathesis against a live piagent: every operation of /openapi.json keeps its contract.

piagent runs under real gunicorn (one gevent worker) in front of the fake Ollama, once
without API keys and once with them. schemathesis (its own command, as a user would run
it) reads the document from the server, generates requests for every operation, valid
ones and ones that break its rules, and checks each answer: no 5xx, and a documented
status, content type, headers and body (stream events included). `make test` runs a
bounded, derandomized profile; `make fuzz` (PIAGENT_FUZZ=1) a longer, random one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import gunicorn_for_module, shared_fake
from tests.fuzzing import FUZZ
from tests.servers import REPO

pytestmark = pytest.mark.gunicorn

KEY = "fuzz-key-0123456789abcdef"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
# Examples per operation and phase: enough to reach every documented status here.
EXAMPLES = 500 if FUZZ else 30
_TOTALS = re.compile(r"(\d+) generated, (\d+) passed")

fake = shared_fake
open_server = gunicorn_for_module()
keyed_server = gunicorn_for_module(API_KEYS=KEY)


def schemathesis(url: str, *options: str) -> str:
    """Run `schemathesis run` on the server's document; its report, after checking it passed."""
    # Deterministic: the same requests every run. By hand, a new seed each time (printed
    # in the report, for --seed to replay it).
    profile = ["--generation-database", "none"] if FUZZ else ["--generation-deterministic"]
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        *("--checks", CHECKS),
        *("--phases", "examples,coverage,fuzzing"),
        *("--max-examples", str(EXAMPLES)),
        *("--request-timeout", "30"),
        "--no-color",
        *profile,
        *options,
    ]
    # The hooks module teaches schemathesis to read NDJSON streams.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    totals = _TOTALS.search(report)
    assert totals is not None and totals.group(1) == totals.group(2), report
    assert "Tested: 12" in report or "--include" in " ".join(options), report
    print(f"schemathesis {' '.join(options)}: {totals.group(0)}")  # shown with -s or -rA
    return report


def test_every_operation_keeps_its_contract_without_keys(open_server, fake):
    schemathesis(open_server.url)


def test_every_operation_keeps_its_contract_with_a_key(keyed_server, fake):
    schemathesis(keyed_server.url, "--header", f"Authorization: Bearer {KEY}")


def test_every_operation_keeps_its_contract_without_the_key_it_needs(keyed_server, fake):
    report = schemathesis(keyed_server.url)
    assert "401" in report  # every protected operation was refused, as documented


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
def test_chat_streams_keep_their_event_shapes(open_server, fake, accept):
    schemathesis(open_server.url, "--include-path", "/chat", "--header", f"Accept: {accept}")
