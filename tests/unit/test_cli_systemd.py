"""`piagent doctor`'s judgement of the systemd unit, from `systemctl show` properties."""

from __future__ import annotations

import pytest

from piagent.cli.doctor.report import Outcome
from piagent.cli.doctor.service import systemd_seconds, unit_checks

SHIPPED = {
    "LoadState": "loaded",
    "ActiveState": "active",
    "SubState": "running",
    "Result": "success",
    "FragmentPath": "/etc/systemd/system/piagent.service",
    "Restart": "on-failure",
    "KillMode": "mixed",
    "TimeoutStopUSec": "45s",
}


def test_the_shipped_unit_passes():
    checks = list(unit_checks(SHIPPED, graceful_timeout_s=30))
    assert [c.outcome for c in checks] == [Outcome.PASSED] * 3
    assert checks[0].text == "systemd: piagent.service is active (running)"


def test_a_unit_that_is_not_installed_does_not_apply():
    (check,) = unit_checks({"LoadState": "not-found"}, graceful_timeout_s=30)
    assert check.outcome is Outcome.NOT_APPLICABLE


def test_a_stopped_unit_without_restarts_or_a_graceful_stop_fails_with_fixes():
    broken = {
        **SHIPPED,
        "ActiveState": "failed",
        "SubState": "failed",
        "Result": "exit-code",
        "Restart": "no",
        "TimeoutStopUSec": "20s",
    }
    state, restart, stop = unit_checks(broken, graceful_timeout_s=30)
    assert state.text == "systemd: piagent.service is failed (failed), last result: exit-code"
    assert state.fix.startswith("sudo systemctl start piagent; journalctl -u piagent")
    assert restart.fix.startswith("set Restart=on-failure in /etc/systemd/system/piagent.service")
    assert "TimeoutStopSec 20 s is not longer than GRACEFUL_TIMEOUT 30 s" in stop.text
    assert stop.fix.startswith("set TimeoutStopSec=45 in ")
    assert all(c.outcome is Outcome.FAILED for c in (state, restart, stop))


def test_killing_every_process_at_once_fails():
    *_, stop = unit_checks({**SHIPPED, "KillMode": "control-group"}, graceful_timeout_s=30)
    assert stop.outcome is Outcome.FAILED
    assert stop.fix.startswith("set KillMode=mixed in ")


@pytest.mark.parametrize(
    ("timespan", "expected"),
    [("45s", 45), ("1min 30s", 90), ("1min 30.500000s", 90.5), ("500ms", 0.5), ("infinity", None)],
)
def test_systemd_seconds(timespan, expected):
    assert systemd_seconds(timespan) == expected
