"""A connection to a model server that failed, named by the step that failed."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

import requests
from requests.utils import select_proxy
from urllib3.exceptions import NameResolutionError

from ..errors import UpstreamUnreachable
from ..urls import scrub_credentials, without_credentials


def unreachable(
    exc: requests.ConnectionError,
    server: str,
    url: str,
    variable: str,
    proxies: Mapping[str, str],
) -> UpstreamUnreachable:
    """No connection to `server` at `url`: name the step that failed and the setting to check.

    The step is the proxy, the host name (DNS), TLS, or else the server itself; `variable`
    is the setting that holds `url`, `proxies` those the environment gives for it.
    """
    base_url = without_credentials(url)
    where = f"{server} at {base_url} cannot be reached"
    causes = list(_causes(exc))
    if isinstance(exc, requests.exceptions.ProxyError):
        proxy = without_credentials(select_proxy(url, proxies) or "")
        proxy_variable = _proxy_variable(urlsplit(url).scheme)
        return UpstreamUnreachable(
            f"{where}: proxy refused (the proxy {proxy} from {proxy_variable}: "
            f"{_reason(causes[-1])}); check {proxy_variable}, or add the host of "
            f"{variable} to NO_PROXY"
        )
    if any(isinstance(cause, NameResolutionError) for cause in causes):
        host = urlsplit(url).hostname
        return UpstreamUnreachable(f"{where}: host name {host} not found (DNS); check {variable}")
    if isinstance(exc, requests.exceptions.SSLError):
        untrusted = [c for c in causes if isinstance(c, ssl.SSLCertVerificationError)]
        if untrusted:
            return UpstreamUnreachable(
                f"{where}: certificate not trusted ({untrusted[0].verify_message}); "
                f"check {variable}, or set REQUESTS_CA_BUNDLE to a file holding "
                "the authority that signed it"
            )
        return UpstreamUnreachable(
            f"{where}: TLS failed ({_reason(causes[-1])}); check that {variable} "
            "says https:// only for a server that speaks TLS"
        )
    return UpstreamUnreachable(
        f"{server} is not reachable at {base_url}: is it running? ({variable})"
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: requests wraps urllib3's errors, which wrap the socket's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "reason", None)  # urllib3's MaxRetryError
        if not isinstance(wrapped, BaseException):
            wrapped = next((a for a in current.args if isinstance(a, BaseException)), None)
        current = wrapped or current.__cause__ or current.__context__


def _reason(cause: BaseException) -> str:
    """The innermost error's words: an OSError's strerror, a TLS error's reason, or its text."""
    words = getattr(cause, "strerror", None) or getattr(cause, "reason", None) or str(cause)
    return scrub_credentials(str(words))


def _proxy_variable(scheme: str) -> str:
    """The variable that gave the proxy for `scheme`, looked up in the order requests uses."""
    names = (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY")
    return next((name for name in names if os.environ.get(name)), names[1])
