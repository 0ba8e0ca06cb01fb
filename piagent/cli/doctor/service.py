"""piagent itself: does it answer at --url (/health, then /ready), and how does systemd run it?"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..client import PiagentClient, refusal
from ..errors import CliError
from .report import Check, failed, not_applicable, passed

TIMEOUT_S = 5.0
UNIT = "piagent.service"
# Where systemd, when it is the running init, says so (what sd_booted() looks at).
SYSTEMD_RUNTIME = Path("/run/systemd/system")
_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "FragmentPath",
    "Restart",
    "KillMode",
    "TimeoutStopUSec",
)
_RESTARTS = {"on-failure", "on-abnormal", "on-abort", "always"}
_TIMESPAN_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "M": 2629800,
    "y": 31557600,
}


def check_piagent(url: str) -> Iterator[Check]:
    """GET /health (is it up?), then /ready (can it answer chats?), each timed."""
    client = PiagentClient(url)
    fix_down = (
        "start it (sudo systemctl start piagent, or make run); if it listens elsewhere, "
        "give its address with --url or PIAGENT_URL"
    )
    timings = []
    for path in ("/health", "/ready"):
        started = time.monotonic()
        try:
            response = client.request("GET", path, read_timeout_s=TIMEOUT_S, check=False)
        except CliError as exc:  # Unreachable: its message without the hint for ask and chat
            yield failed(f"piagent: {exc.message}", fix_down)
            return
        took = f"{path} in {(time.monotonic() - started) * 1000:.0f} ms"
        if response.status_code != 200:
            detail = refusal(response).detail
            if path == "/ready":  # its detail is the server's own advice
                yield failed(f"piagent at {url} is not ready ({took})", detail)
            else:
                yield failed(
                    f"piagent at {url}: {took} answered {response.status_code}: {detail}",
                    "check that piagent's service runs (sudo systemctl status piagent) and "
                    "that --url points at it or at the nginx in front of it",
                )
            return
        timings.append(took)
    yield passed(f"piagent answers at {url}: {', '.join(timings)}")


def check_systemd(graceful_timeout_s: float) -> Iterator[Check]:
    """The unit's state, restart and stop settings, when systemd runs this machine."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not SYSTEMD_RUNTIME.is_dir():
        yield not_applicable("systemd: not running here (a container?), so no unit to check")
        return
    try:
        shown = subprocess.run(
            [systemctl, "show", UNIT, f"--property={','.join(_PROPERTIES)}"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        yield failed(
            f"systemd: systemctl show {UNIT} did not answer within {TIMEOUT_S:g} s",
            "sudo systemctl status piagent shows the unit by hand",
        )
        return
    properties = dict(line.partition("=")[::2] for line in shown.stdout.splitlines())
    yield from unit_checks(properties, graceful_timeout_s)


def unit_checks(properties: Mapping[str, str], graceful_timeout_s: float) -> Iterator[Check]:
    """Judge `systemctl show` properties: active, restarted on failure, stopped gracefully."""
    if properties.get("LoadState") != "loaded":
        yield not_applicable(f"systemd: {UNIT} is not installed")
        return
    where = properties.get("FragmentPath") or UNIT
    reload = "then sudo systemctl daemon-reload && sudo systemctl restart piagent"
    state = f"{properties.get('ActiveState')} ({properties.get('SubState')})"
    if properties.get("ActiveState") == "active":
        yield passed(f"systemd: {UNIT} is {state}")
    else:
        result = properties.get("Result")
        why = f", last result: {result}" if result and result != "success" else ""
        yield failed(
            f"systemd: {UNIT} is {state}{why}",
            "sudo systemctl start piagent; journalctl -u piagent -n 50 shows why it stopped",
        )
    restart = properties.get("Restart", "no")
    if restart in _RESTARTS:
        yield passed(f"systemd: restarts when it fails (Restart={restart})")
    else:
        yield failed(
            f"systemd: {UNIT} is not restarted when it fails (Restart={restart})",
            f"set Restart=on-failure in {where}, {reload}",
        )
    stop_s = systemd_seconds(properties.get("TimeoutStopUSec", ""))
    kill_mode = properties.get("KillMode")
    if stop_s is not None and stop_s <= graceful_timeout_s:
        yield failed(
            f"systemd: TimeoutStopSec {stop_s:g} s is not longer than GRACEFUL_TIMEOUT "
            f"{graceful_timeout_s:g} s, so a stop kills streams gunicorn is still finishing",
            f"set TimeoutStopSec={int(graceful_timeout_s) + 15} in {where}, {reload}",
        )
    elif kill_mode != "mixed":
        yield failed(
            f"systemd: KillMode={kill_mode} sends SIGTERM to every worker at once instead of "
            "letting gunicorn stop them gracefully",
            f"set KillMode=mixed in {where}, {reload}",
        )
    else:
        limit = "no limit" if stop_s is None else f"TimeoutStopSec {stop_s:g} s"
        yield passed(
            f"systemd: stops gracefully (KillMode=mixed, {limit} > GRACEFUL_TIMEOUT "
            f"{graceful_timeout_s:g} s)"
        )


def systemd_seconds(timespan: str) -> float | None:
    """A systemd time span ("45s", "1min 30s", "infinity") in seconds; None for no limit."""
    if timespan in ("", "infinity"):
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]+)?", timespan)
    return sum(float(number) * _TIMESPAN_UNITS.get(unit or "s", 1) for number, unit in parts)
