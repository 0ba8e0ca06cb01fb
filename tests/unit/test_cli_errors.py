"""The command's one-line errors and its entry points."""

from __future__ import annotations

import importlib
import tomllib

import pytest

from piagent.cli.errors import one_line
from tests.servers import REPO


def test_one_line_joins_field_errors_without_the_body_prefix():
    detail = [
        {"loc": ["body", "message"], "msg": "String should have at most 4000 characters"},
        {"loc": ["body", "agent"], "msg": "Input should be a valid string"},
    ]
    assert one_line(detail) == (
        "message: String should have at most 4000 characters; agent: Input should be a valid string"
    )


def test_one_line_folds_whitespace():
    assert one_line("Ollama failed:\n  out of memory\n") == "Ollama failed: out of memory"


def test_the_console_script_runs_the_command(monkeypatch, capsys):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["piagent"].partition(":")
    entry_point = getattr(importlib.import_module(module), name)
    monkeypatch.setattr("sys.argv", ["piagent", "--help"])
    with pytest.raises(SystemExit) as leaving:
        entry_point()
    assert leaving.value.code == 0
    assert capsys.readouterr().out.startswith("Usage: piagent [OPTIONS] COMMAND")
