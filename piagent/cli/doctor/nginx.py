"""nginx in front of piagent: `nginx -t`, then each piagent site's buffering and read timeout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .nginx_conf import (
    Directive,
    blocks_with,
    effective,
    parse,
    seconds,
    simple_directives,
    split_dump,
)
from .report import Check, Outcome, failed, not_applicable, passed

if TYPE_CHECKING:
    from ...settings import Settings

TIMEOUT_S = 10.0
_DEFAULT_READ_TIMEOUT = "60s"  # nginx's own default for proxy_read_timeout
_EMERG = re.compile(r"\[emerg\] (?:\d+#\d+: )?(.*)")
_RELOAD = "then sudo nginx -t && sudo systemctl reload nginx"


def check_nginx(conf: Path, settings: Settings, bind: str) -> Iterator[Check]:
    """When nginx is installed and a site proxies to piagent: its configuration, judged."""
    # /usr/sbin is not on an ordinary user's PATH.
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        yield not_applicable("nginx: not installed")
        return
    if not conf.is_file():
        yield not_applicable(f"nginx: no configuration at {conf}")
        return
    conf = conf.absolute()
    # -T tests the configuration like -t, then prints every file it read, includes too.
    try:
        tested = subprocess.run(
            [binary, "-T", "-c", str(conf)], capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        yield failed(
            f"nginx -t did not finish within {TIMEOUT_S:g} s",
            "run sudo nginx -t by hand: it may be waiting to resolve a host name in the "
            "configuration (an upstream's server)",
        )
        return
    if tested.returncode != 0:
        yield _test_failure(tested.stderr)
        return
    texts = split_dump(tested.stdout)
    files = {path: parse(text) for path, text in texts.items()}
    sites = [path for path in files if path != str(conf) and _is_piagent_site(texts[path], bind)]
    if not sites:
        yield not_applicable(
            f"nginx: no site in {conf} mentions piagent or proxies to its BIND {bind}"
        )
        return
    yield passed(f"nginx -t passes ({conf})")
    inherited = _http_level(files, str(conf))
    needed_s = settings.queue_timeout_s + settings.first_token_timeout_s
    for path in sites:
        yield from _site_checks(path, files[path], inherited, needed_s)


def _test_failure(stderr: str) -> Check:
    lines = stderr.strip().splitlines()
    problem = next((m.group(1) for line in lines if (m := _EMERG.search(line))), None)
    problem = problem or (lines[-1] if lines else "no output")
    if "Permission denied" in stderr and os.geteuid() != 0:
        return failed(
            f"nginx -t cannot read its configuration as this user: {problem}",
            "run doctor with sudo (sudo .venv/bin/piagent doctor ...)",
        )
    return failed(f"nginx -t fails: {problem}", f"correct the line it names, {_RELOAD}")


def _is_piagent_site(text: str, bind: str) -> bool:
    return "piagent" in text.lower() or bind in text


def _http_level(files: dict[str, list[Directive]], main: str) -> list[Directive]:
    """Directives every server inherits: the main file's `http` block, and the top of the
    files included into it (conf.d, sites). Files included elsewhere add nothing that
    matters here: they hold no proxy_ directives."""
    inherited: list[Directive] = []
    for directive in files.get(main, []):
        if directive.name == "http" and directive.block is not None:
            inherited += simple_directives(directive.block)
    for path, directives in files.items():
        if path != main:
            inherited += simple_directives(directives)
    return inherited


def _site_checks(
    path: str, tree: list[Directive], inherited: Sequence[Directive], needed_s: float
) -> Iterator[Check]:
    """Every block that proxies (a location, mostly): streams unbuffered, waits long enough."""
    proxies = list(blocks_with(tree, "proxy_pass"))
    if not proxies:
        yield failed(
            f"nginx: {path} mentions piagent but has no proxy_pass",
            f"start from config/nginx/piagent.conf in the piagent checkout, {_RELOAD}",
        )
        return
    buffering = [_buffering_check(path, chain, inherited) for chain in proxies]
    timeouts = [_timeout_check(path, chain, inherited, needed_s) for chain in proxies]
    for checks in (buffering, timeouts):
        failures = [check for check in checks if check.outcome is Outcome.FAILED]
        yield from failures or dict.fromkeys(checks)  # each passing line once


def _where(path: str, block: Directive) -> str:
    return f"{path}:{block.line} ({' '.join([block.name, *block.args])})"


def _buffering_check(
    path: str, chain: tuple[Directive, ...], inherited: Sequence[Directive]
) -> Check:
    """Buffering off, or on but switched off per response by piagent's X-Accel-Buffering."""
    buffering = effective("proxy_buffering", chain, inherited)
    if buffering is not None and buffering.args[:1] == ["off"]:
        return passed(f"nginx: {path} passes streams on unbuffered (proxy_buffering off)")
    ignored = effective("proxy_ignore_headers", chain, inherited)
    if ignored is not None and "x-accel-buffering" in (a.lower() for a in ignored.args):
        return failed(
            f"nginx buffers piagent's streams at {_where(path, chain[-1])}: proxy_buffering is "
            "on and proxy_ignore_headers drops piagent's X-Accel-Buffering: no, so tokens "
            "arrive in bursts",
            f"add `proxy_buffering off;` to that block (or take X-Accel-Buffering out of "
            f"proxy_ignore_headers), {_RELOAD}",
        )
    return passed(
        f"nginx: {path} passes streams on unbuffered (buffering is on, but piagent's "
        "X-Accel-Buffering: no turns it off for them)"
    )


def _timeout_check(
    path: str, chain: tuple[Directive, ...], inherited: Sequence[Directive], needed_s: float
) -> Check:
    """nginx must wait longer than piagent may stay silent: queued, then the first token."""
    timeout = effective("proxy_read_timeout", chain, inherited)
    value = " ".join(timeout.args) if timeout else _DEFAULT_READ_TIMEOUT
    waits_s = seconds(value)
    if waits_s is not None and waits_s <= needed_s:
        return failed(
            f"nginx: proxy_read_timeout {value} at {_where(path, chain[-1])} is not longer than "
            f"QUEUE_TIMEOUT_S + FIRST_TOKEN_TIMEOUT_S ({needed_s:g} s): nginx would cut a "
            "stream that is still waiting for its first token",
            f"set `proxy_read_timeout {int(needed_s) + 30}s;` in that block, {_RELOAD}",
        )
    return passed(
        f"nginx: {path} waits {value} for piagent (proxy_read_timeout), longer than "
        f"QUEUE_TIMEOUT_S + FIRST_TOKEN_TIMEOUT_S ({needed_s:g} s)"
    )
