"""gunicorn.conf.py reads the app's settings through the app's loader, as gunicorn runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Run the file the way gunicorn does (before --pythonpath applies), in a clean process
# whose folder holds no piagent, and report what it decided and what it left imported.
READ_CONFIG = """
import json, runpy, sys
config = runpy.run_path(sys.argv[1])
print(json.dumps({
    "workers": config["workers"],
    "modules": sorted({name.partition(".")[0] for name in sys.modules}),
}))
"""


def read_config(tmp_path: Path, env: dict[str, str], dot_env: str = "") -> tuple[dict, str]:
    (tmp_path / ".env").write_text(dot_env)
    result = subprocess.run(
        [sys.executable, "-c", READ_CONFIG, str(REPO / "gunicorn.conf.py")],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


@pytest.mark.parametrize(
    ("env", "dot_env", "workers"),
    [
        ({"WEB_CONCURRENCY": "3"}, "", 1),
        ({"WEB_CONCURRENCY": "3", "ENABLE_MEMORY": "off"}, "", 3),
        ({"WEB_CONCURRENCY": "2"}, "MEMORY_BACKEND=sqlite\n", 2),
        ({}, "WEB_CONCURRENCY=2\nENABLE_MEMORY=No\n", 2),
        # The environment wins over .env, as in the app.
        ({"WEB_CONCURRENCY": "2", "MEMORY_BACKEND": "memory"}, "MEMORY_BACKEND=redis\n", 1),
    ],
    ids=["in-process", "memory-off", "sqlite-in-dot-env", "off-in-dot-env", "environment-wins"],
)
def test_worker_count_follows_the_apps_memory_settings(tmp_path, env, dot_env, workers):
    config, _ = read_config(tmp_path, env, dot_env)
    assert config["workers"] == workers


def test_a_setting_the_app_cannot_read_is_left_to_one_worker_to_report(tmp_path):
    config, stderr = read_config(tmp_path, {"WEB_CONCURRENCY": "3", "MEMORY_MAX_TURNS": "lots"})
    assert config["workers"] == 1
    assert stderr == ""  # the worker prints the one line; saying it here would say it twice


def test_the_master_keeps_neither_piagent_nor_the_web_stack_imported(tmp_path):
    config, _ = read_config(tmp_path, {})
    # Workers (also those a reload starts) import piagent from disk, after gevent patched.
    assert "piagent" not in config["modules"]
    assert {"flask", "werkzeug", "requests", "urllib3", "prometheus_client"}.isdisjoint(
        config["modules"]
    )
