"""Run a real nginx in the foreground on loopback, with everything in one temp folder."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.components import require_program
from tests.servers import RunningServer, stop_process, wait_until

_MAIN_CONF = """\
daemon off;
user root;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/site.conf;
}}
"""


@contextmanager
def nginx(site_conf: str, root: Path) -> Iterator[RunningServer]:
    """Serve `site_conf` (server/upstream blocks) with nginx; stop it by its PID after."""
    binary = require_program("nginx", "/usr/sbin/nginx")
    (root / "site.conf").write_text(site_conf)
    (root / "nginx.conf").write_text(_MAIN_CONF.format(root=root))
    log_path = root / "stderr.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                "-p",
                str(root),
                "-c",
                str(root / "nginx.conf"),
                "-e",
                str(root / "error.log"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    port = _listen_port(site_conf)
    server = RunningServer(url=f"http://127.0.0.1:{port}", pid=process.pid, log_path=log_path)
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(root / 'error.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, 10, what="nginx to listen")
        yield server
    finally:
        stop_process(process, timeout=10)


def _listen_port(site_conf: str) -> int:
    for line in site_conf.splitlines():
        words = line.split()
        if words[:1] == ["listen"] and words[1].startswith("127.0.0.1:"):
            return int(words[1].rstrip(";").split(":")[1])
    raise ValueError("the site must listen on 127.0.0.1:PORT")


def shipped_site(upstream: str, port: int) -> str:
    """config/nginx/piagent.conf, pointed at `upstream` and listening on loopback `port`."""
    from tests.servers import REPO

    site = (REPO / "config" / "nginx" / "piagent.conf").read_text()
    site = site.replace("server 127.0.0.1:8000;", f"server {upstream};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    return site.replace("listen [::]:80;", "")


def default_buffering_site(upstream: str, port: int) -> str:
    """The least a user might write: nginx's default proxy buffering left on."""
    return f"""
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://{upstream};
        proxy_http_version 1.1;
    }}
}}
"""


_EXAMPLE_PI = re.compile(r"^(\s*)server 192\.168\.1\.\d+:8000(\s.*)$")


def cluster_site(pis: list[str], port: int) -> str:
    """config/nginx/piagent-cluster.conf with `pis` (host:port) in each upstream, on loopback."""
    from tests.servers import REPO

    lines: list[str] = []
    after_example = False
    for line in (REPO / "config" / "nginx" / "piagent-cluster.conf").read_text().splitlines():
        example = _EXAMPLE_PI.match(line)
        if example and not after_example:  # the example Pis become these, same parameters
            lines += [f"{example[1]}server {pi}{example[2]}" for pi in pis]
        elif not example:
            lines.append(line)
        after_example = bool(example)
    site = "\n".join(lines) + "\n"
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    return site.replace("listen [::]:80;", "")
