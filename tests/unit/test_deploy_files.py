"""The deploy files in config/ agree with the code: every variable documented, timeouts nested."""

from __future__ import annotations

import configparser
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from piagent.settings import Settings, load_settings
from tests.components import require_program

REPO = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO / "config" / "piagent.env.example"
UNIT = REPO / "config" / "systemd" / "piagent.service"
# Documented with an example instead of the default, which depends on the install.
EXAMPLE_VALUES = {"PROMPTS_DIR", "MEMORY_PATH"}


def documented() -> dict[str, str]:
    """VARIABLE -> value of each `#VARIABLE=value` line."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(m.groups() for line in lines if (m := re.match(r"^#([A-Z][A-Z0-9_]*)=(.*)$", line)))


def gunicorn_variables() -> set[str]:
    return set(re.findall(r'_env\.get\("([A-Z_]+)"', (REPO / "gunicorn.conf.py").read_text()))


def test_every_variable_is_documented_once():
    names = [m for m in re.findall(r"^#([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M)]
    assert len(names) == len(set(names))
    expected = {name.upper() for name in Settings.model_fields} | gunicorn_variables()
    assert expected - set(names) == set()
    assert set(names) - expected == set()  # nothing documented that nobody reads


def test_documented_values_are_the_defaults():
    values = documented()
    settings = {k: v for k, v in values.items() if k.lower() in Settings.model_fields}
    loaded = load_settings(environ=settings, env_file=None)
    for name in Settings.model_fields:
        documented_value, default = getattr(loaded, name), getattr(Settings(), name)
        if name.upper() in EXAMPLE_VALUES:
            continue
        if values[name.upper()] == "":  # "not set": empty or None, whichever the field uses
            assert not documented_value and not default, name
        else:
            assert documented_value == default, name


def gunicorn_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """gunicorn.conf.py as gunicorn reads it with nothing set."""
    for name in gunicorn_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    return runpy.run_path(str(REPO / "gunicorn.conf.py"))


def test_gunicorn_defaults_are_the_documented_ones(tmp_path, monkeypatch):
    config, values = gunicorn_config(tmp_path, monkeypatch), documented()
    assert config["bind"] == values["BIND"]
    assert config["workers"] == int(values["WEB_CONCURRENCY"])
    assert config["worker_connections"] == int(values["WORKER_CONNECTIONS"])
    assert config["graceful_timeout"] == int(values["GRACEFUL_TIMEOUT"])
    assert config["loglevel"] == values["LOG_LEVEL"]
    assert config["accesslog"] is None and values["ACCESS_LOG"] == ""


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_waits_longer_than_gunicorns_grace_period(tmp_path, monkeypatch):
    service = unit()["Service"]
    graceful = gunicorn_config(tmp_path, monkeypatch)["graceful_timeout"]
    assert int(service["TimeoutStopSec"]) > graceful
    assert service["KillMode"] == "mixed"  # SIGTERM to the master only, which stops workers
    assert service["Restart"] == "on-failure"
    assert service["User"] != "root"


def test_systemd_unit_is_valid(tmp_path):
    analyze = require_program("systemd-analyze")
    # verify wants the programs it names to exist: point them at real ones.
    text = UNIT.read_text().replace("/opt/piagent/.venv/bin/gunicorn", sys.executable)
    (tmp_path / "piagent.service").write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "piagent.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "piagent.service" in line  # other units of the machine are not ours to judge
    ]
    assert result.returncode == 0 and complaints == [], complaints


def writable_paths(service: configparser.SectionProxy) -> list[Path]:
    """Where a unit under ProtectSystem=strict may keep files."""
    # Its own directories (StateDirectory=NAME is /var/lib/NAME, ...) and ReadWritePaths=
    # ("-" marks one that may be missing).
    roots = {
        "StateDirectory": "/var/lib",
        "CacheDirectory": "/var/cache",
        "LogsDirectory": "/var/log",
        "RuntimeDirectory": "/run",
    }
    found = [
        Path(root, name) for key, root in roots.items() for name in service.get(key, "").split()
    ]
    found += [Path(path.lstrip("-")) for path in service.get("ReadWritePaths", "").split()]
    return found


def test_the_default_memory_file_under_the_shipped_unit_is_writable():
    service = unit()["Service"]
    assert service["ProtectSystem"] == "strict"  # everything else is read-only
    writable = writable_paths(service)
    # What systemd hands the service: STATE_DIRECTORY, then the settings file as shipped
    # (every line commented out), with only the SQLite backend switched on.
    state = ":".join(f"/var/lib/{name}" for name in service["StateDirectory"].split())
    environ = {"STATE_DIRECTORY": state, "MEMORY_BACKEND": "sqlite"}
    path = load_settings(environ=environ, env_file=ENV_EXAMPLE).memory_path
    assert any(path.is_relative_to(folder) for folder in writable), (path, writable)
    # The example's own suggestion is that same file.
    assert documented()["MEMORY_PATH"] == str(path)
