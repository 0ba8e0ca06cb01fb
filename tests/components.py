"""Finding the real programs some tests need (nginx, redis-server, ...)."""

from __future__ import annotations

import os
import shutil

import pytest

# .ci/run sets this, so a missing component fails the run instead of skipping tests.
REQUIRE_COMPONENTS = os.environ.get("PIAGENT_REQUIRE_COMPONENTS") == "1"


def require_program(name: str, *search: str) -> str:
    """The path of program `name`; skip the test without it (fail when components are required)."""
    path = shutil.which(name) or next((p for p in search if os.access(p, os.X_OK)), None)
    if path:
        return path
    message = f"{name} is not installed (Debian: apt-get install {name})"
    if REQUIRE_COMPONENTS:
        pytest.fail(message)
    pytest.skip(message)
