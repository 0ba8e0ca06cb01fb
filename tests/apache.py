"""Run Debian's Apache with mod_wsgi in the foreground on loopback, serving the shipped site."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.components import require_file, require_program
from tests.embedded_python import system_python_venv
from tests.servers import REPO, RunningServer, free_port, is_healthy, stop_process, wait_until

SITE = REPO / "config" / "apache" / "piagent.conf"
MODULES = Path("/usr/lib/apache2/modules")  # Debian's apache2-bin and libapache2-mod-wsgi-py3
UNPRIVILEGED_USER = "www-data"

# The least a Debian Apache has, plus mod_deflate set to compress text/plain (as Debian's
# deflate.conf does), so that a stream compressed by mistake shows in the tests.
_MAIN_CONF = """\
ServerRoot {root}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {root}/httpd.pid
DefaultRuntimeDir {root}
ErrorLog {root}/error.log
LogLevel warn
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule alias_module {modules}/mod_alias.so
LoadModule setenvif_module {modules}/mod_setenvif.so
LoadModule filter_module {modules}/mod_filter.so
LoadModule deflate_module {modules}/mod_deflate.so
LoadModule wsgi_module {modules}/mod_wsgi.so
AddOutputFilterByType DEFLATE text/plain application/json
Define PIAGENT_ROOT {repo}
Define PIAGENT_VENV {venv}
Define PIAGENT_ENV_DIR {root}
Define PIAGENT_PORT {port}
Include {site}
"""


@contextmanager
def apache(env: Mapping[str, str], *, healthy: bool = True) -> Iterator[RunningServer]:
    """Serve piagent under Apache + mod_wsgi with the shipped site; `env` goes in its .env.

    With healthy=False it is handed over once Apache answers at all, for a piagent that
    is meant to fail.

    Its files live in a temp folder of its own that Apache's user can enter: mod_wsgi
    checks the virtualenv with access(), which ignores capabilities (see _unprivileged),
    and pytest's own temp folders are private to the user running the tests.
    """
    binary = require_program("apache2", "/usr/sbin/apache2")
    require_file(MODULES / "mod_wsgi.so", "libapache2-mod-wsgi-py3")
    with tempfile.TemporaryDirectory(prefix="piagent-apache-") as folder:
        root = Path(folder)
        root.chmod(0o755)
        with _serve(binary, env, root, healthy) as server:
            yield server


@contextmanager
def _serve(
    binary: str, env: Mapping[str, str], root: Path, healthy: bool
) -> Iterator[RunningServer]:
    port = free_port()
    (root / ".env").write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    conf = root / "httpd.conf"
    conf.write_text(
        _MAIN_CONF.format(
            root=root,
            port=port,
            modules=MODULES,
            repo=REPO,
            venv=system_python_venv(root / "venv"),
            site=SITE,
        )
    )
    log_path = root / "error.log"
    with open(root / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [*_unprivileged(), binary, "-f", str(conf), "-DFOREGROUND"],
            env={"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            stdout=stderr,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(url=f"http://127.0.0.1:{port}", pid=process.pid, log_path=log_path)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                logs = (root / "stderr.log").read_text() + server.log()
                raise RuntimeError(f"apache2 exited early:\n{logs}")
            return is_healthy(server.url) if healthy else _answers(server.url)

        wait_until(ready, 30, interval=0.1, what="Apache and piagent's daemon to answer")
        yield server
    finally:
        stop_process(process, timeout=15)


def _answers(url: str) -> bool:
    try:
        requests.get(f"{url}/health", timeout=1)
        return True
    except requests.RequestException:
        return False


def _unprivileged() -> list[str]:
    """The prefix that starts Apache as a user it accepts, when the tests run as root.

    Apache refuses to serve as root, and a checkout under a root-only home (as in CI)
    is out of an ordinary user's reach. So as root, Apache starts as www-data from the
    outset (it then keeps that user for its children and mod_wsgi's daemon) with one
    capability kept: CAP_DAC_OVERRIDE, which lets it read the checkout and the test
    venv's packages wherever they are. Not root: Apache runs as that user.
    """
    if os.geteuid() != 0:
        return []
    setpriv = require_program("setpriv", "/usr/bin/setpriv")
    user = pwd.getpwnam(UNPRIVILEGED_USER)
    return [
        setpriv,
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        "--inh-caps=+dac_override",
        "--ambient-caps=+dac_override",
    ]
