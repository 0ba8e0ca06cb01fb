"""A virtualenv for servers that embed the system's Python: Apache's mod_wsgi, uWSGI's plugin."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

from tests.components import require_file

# What Debian's libapache2-mod-wsgi-py3 and uwsgi-plugin-python3 are linked against.
SYSTEM_PYTHON = Path("/usr/bin/python3")


def system_python_venv(dest: Path) -> Path:
    """A venv of the system's python3 that sees the packages of the venv running the tests.

    Such a server can only use a virtualenv made from the Python it embeds: the stdlib
    of another 3.11 build (pyenv's, say) has compiled modules the embedded one cannot
    load. The README tells deployers to make their .venv with the system's python3; the
    tests make this stand-in instead of rebuilding the project's .venv. The packages
    themselves are built for the 3.11 ABI, so they load in either.
    """
    # By its path: a python3 found first on PATH (pyenv's, say) may be another build.
    python = require_file(SYSTEM_PYTHON, "python3-venv")
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    theirs = subprocess.run(
        [python, "-c", "import sys; print(f'{sys.version_info.major}.{sys.version_info.minor}')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if theirs != ours:
        raise RuntimeError(
            f"{python} is Python {theirs}; the tests run {ours}: no venv can span them"
        )
    subprocess.run([python, "-m", "venv", "--without-pip", str(dest)], check=True)
    packages = dest / "lib" / f"python{ours}" / "site-packages"
    # An `import` line in a .pth file runs at start-up; addsitedir also reads the .pth
    # files of the test venv (editable installs and the like).
    lines = [f"import site; site.addsitedir({path!r})" for path in site.getsitepackages()]
    (packages / "test-venv.pth").write_text("\n".join(lines) + "\n")
    return dest
