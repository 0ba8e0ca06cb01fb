"""URLs as piagent may show them: in replies, log lines, metrics and the doctor's report.

A URL may carry a secret (`http://user:password@host`, Redis's `redis://:password@host`
or its `?password=` query), and error texts from libraries may quote a URL whole. Every
URL piagent names goes through `without_credentials`, every foreign text that may hold
one through `scrub_credentials`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# What stands between "scheme://" and "@" in a URL: its user name and password.
_USERINFO = re.compile(r"(?<=://)[^/\s]*@")


def without_credentials(url: str) -> str:
    """`url` with no user name, password, query or fragment: what is left names the place."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: keep what surely is no secret
        return scrub_credentials(url).partition("?")[0]
    # The netloc as written after the "@" (urlsplit's hostname would lose IPv6 brackets).
    host = parts.netloc.rpartition("@")[2]
    # Built by hand: urlunsplit drops the "//" of unix:///path, whose netloc is empty.
    scheme = f"{parts.scheme}://" if parts.scheme and "://" in url else ""
    # Scrubbed as well, for a value that is no single URL but holds one.
    return scrub_credentials(f"{scheme}{host}{parts.path}")


def scrub_credentials(text: str) -> str:
    """`text` with the user name and password of every URL in it removed."""
    return _USERINFO.sub("", text)
