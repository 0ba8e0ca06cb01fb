"""The Apache site and the uWSGI ini agree with piagent: one process, enough threads, no cut."""

from __future__ import annotations

import configparser
import json
import re

import pytest

from piagent.settings import Settings
from tests.apache import SITE
from tests.servers import REPO
from tests.uwsgi_server import INI

DEFAULTS = Settings()
# Streams piagent admits at once (working or queued): each holds a server thread.
ADMITTED = DEFAULTS.max_concurrent_generations + DEFAULTS.queue_max
# Options that restart the process on their own: its streams would be cut and its
# in-memory conversations forgotten.
APACHE_RESTARTERS = {"request-timeout", "inactivity-timeout", "maximum-requests"}
UWSGI_RESTARTERS = re.compile(r"^(harakiri|max-requests|max-worker-lifetime|reload-on-.*)$")


def site_text() -> str:
    """The site with its continuation lines joined and comments dropped."""
    lines = [line for line in SITE.read_text().splitlines() if not line.lstrip().startswith("#")]
    return "\n".join(lines).replace("\\\n", " ")


def daemon_options() -> dict[str, str]:
    """The key=value options of the WSGIDaemonProcess directive."""
    (line,) = [line for line in site_text().splitlines() if "WSGIDaemonProcess" in line]
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


def uwsgi_options() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(INI.read_text())
    return parser["uwsgi"]


def test_one_process_holds_the_conversations():
    assert daemon_options()["processes"] == "1"
    assert uwsgi_options()["workers"] == "1"


@pytest.mark.parametrize("threads", ["apache", "uwsgi"])
def test_threads_cover_every_admitted_stream_and_more(threads):
    count = daemon_options()["threads"] if threads == "apache" else uwsgi_options()["threads"]
    assert int(count) > ADMITTED


def test_apache_waits_longer_than_piagent_serves():
    socket_timeout = int(daemon_options()["socket-timeout"])
    # The longest piagent keeps a client waiting for its next bytes.
    first_bytes = DEFAULTS.queue_timeout_s + max(
        DEFAULTS.first_token_timeout_s, DEFAULTS.reply_timeout_s
    )
    assert socket_timeout > first_bytes
    assert socket_timeout > DEFAULTS.stream_idle_timeout_s
    assert APACHE_RESTARTERS.isdisjoint(daemon_options())


def test_uwsgi_never_restarts_its_worker_on_its_own():
    assert not [key for key in uwsgi_options() if UWSGI_RESTARTERS.match(key)]


def test_apache_refuses_only_bodies_piagent_would_refuse_too():
    (limit,) = re.findall(r"^\s*LimitRequestBody (\d+)$", site_text(), re.M)
    assert int(limit) > DEFAULTS.max_body_bytes


def test_apache_error_pages_are_json_details():
    pages = re.findall(r"^\s*ErrorDocument (\d{3}) /piagent-errors/(\S+)$", site_text(), re.M)
    assert {status for status, _ in pages} == {"413", "500", "503", "504"}
    for _, name in pages:
        detail = json.loads((REPO / "config" / "apache" / "errors" / name).read_text())["detail"]
        assert isinstance(detail, str) and detail
