"""URLs as piagent shows them: the place, never the credentials."""

from __future__ import annotations

import pytest

from piagent.urls import scrub_credentials, without_credentials


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("http://user:pw@127.0.0.1:11434/", "http://127.0.0.1:11434/"),
        ("https://user@api.example/v1", "https://api.example/v1"),
        ("http://user:p%40ss@[::1]:8080/v1", "http://[::1]:8080/v1"),
        ("redis://:pw@10.0.0.3:6379/0", "redis://10.0.0.3:6379/0"),
        ("redis://10.0.0.3:6379/0?password=pw", "redis://10.0.0.3:6379/0"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock"),
        ("http://user:pw@host:port-not-a-number", "http://host:port-not-a-number"),
        ("http://user:p@ss@10.0.0.2:11434", "http://10.0.0.2:11434"),
        ("http://user:pw@[::1:8080/v1?key=pw", "http://[::1:8080/v1"),
    ],
)
def test_a_url_is_shown_without_user_password_or_query(url, shown):
    assert without_credentials(url) == shown


def test_every_url_in_a_text_loses_its_credentials():
    text = "failed: Invalid URL 'http://me:p@w@x:1/a' (proxy https://p:q@proxy:3128)"
    assert (
        scrub_credentials(text) == "failed: Invalid URL 'http://x:1/a' (proxy https://proxy:3128)"
    )
