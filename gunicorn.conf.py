"""gunicorn settings for piagent, read from the environment (and `.env`).

Imports piagent.settings and nothing else of piagent: gunicorn's gevent worker must
patch the standard library before the application (Flask, requests) is imported.
"""

import errno
import glob
import os
import shutil
import socket
import sys
import tempfile

from dotenv import dotenv_values

# gunicorn reads this file before it applies --pythonpath, so piagent is found beside it.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
_loaded_before = set(sys.modules)
from piagent.settings import ConfigError, load_settings  # noqa: E402

# The app's settings, through the app's own loader. One it cannot read is left to the
# worker: it prints the app's one line and exits with the code on which gunicorn halts,
# stopping the running workers gracefully even on a reload (SIGHUP), which exiting here
# would not.
try:
    _settings = load_settings()
except ConfigError:
    _settings = None
# Forget piagent again: the workers, also those a reload starts, import it from disk.
for _name in set(sys.modules) - _loaded_before:
    if _name.partition(".")[0] == "piagent":
        del sys.modules[_name]

# gunicorn's own variables, which the app never reads.
_env = {**dotenv_values(".env"), **os.environ}
_OWN_METRICS_PREFIX = "piagent-metrics-"

# Socket: loopback by default; nginx in front is the public face.
bind = _env.get("BIND") or "127.0.0.1:8000"

# Workers: one by default. With MEMORY_BACKEND=memory conversations live in the
# worker's RAM, where a second worker would not see them, so it stays at one; the
# sqlite and redis backends are shared, and any number of workers may use them.
workers = int(_env.get("WEB_CONCURRENCY") or 1)
if _settings is None:
    workers = 1  # one worker to say what is wrong, once
elif workers > 1 and _settings.enable_memory and _settings.memory_backend == "memory":
    print(
        f"piagent: running 1 worker, not WEB_CONCURRENCY={workers}: with MEMORY_BACKEND=memory "
        "each worker would keep its own conversations; set MEMORY_BACKEND=sqlite (or redis) "
        "to share them between workers",
        file=sys.stderr,
        flush=True,
    )
    workers = 1
worker_class = "gevent"
# Concurrent connections per worker; each open stream holds one.
worker_connections = int(_env.get("WORKER_CONNECTIONS") or 1000)

# Timeouts. With gevent the worker heartbeat runs beside long streams, so `timeout`
# only catches a wedged worker; piagent itself times out a silent upstream.
timeout = 30
# On SIGTERM (systemctl stop/restart) running streams get this long to finish, then are
# cut. systemd's TimeoutStopSec must be longer (config/systemd/piagent.service).
graceful_timeout = int(_env.get("GRACEFUL_TIMEOUT") or 30)
keepalive = 5

# No preload_app: sessions and locks must be created after gevent has patched.
preload_app = False

# Logging: to stderr, where systemd's journal picks it up. piagent logs one line per
# request itself (LOG_FORMAT), so gunicorn's access log is off unless ACCESS_LOG is set
# (`-` for stderr).
accesslog = _env.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = _env.get("LOG_LEVEL") or "info"

# Control socket (gunicornc): unused here, and several instances would share its path.
control_socket_disable = True


# Ctrl-C: the terminal sends SIGINT to the whole process group, so a worker hears it
# twice: from the terminal, and as SIGQUIT from the master. gunicorn's gevent worker
# answers each in a greenlet that ends in sys.exit(0); the first one stops the worker,
# and the second, run as the interpreter shuts down, makes gevent print its SystemExit
# as a traceback. This hook runs in that greenlet before it exits: only the first one
# goes on.
def worker_int(worker):
    """Let the first SIGINT or SIGQUIT stop the worker; end any later one's greenlet quietly."""
    if getattr(worker, "piagent_quitting", False):
        from gevent import GreenletExit

        raise GreenletExit  # the end gevent expects of a greenlet: nothing printed
    worker.piagent_quitting = True


# Metrics: with several workers prometheus_client keeps its values in files that every
# worker writes and /metrics sums. The folder must be known before a worker imports it.
_metrics_dir = None
if workers > 1 or _env.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_dir = _env.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
        prefix=_OWN_METRICS_PREFIX
    )
    os.makedirs(_metrics_dir, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

    def child_exit(server, worker):
        """Drop a dead worker's live gauges (what prometheus_client's mark_process_dead does)."""
        for path in glob.glob(os.path.join(_metrics_dir, f"gauge_live*_{worker.pid}.db")):
            os.remove(path)

    def on_exit(server):
        """Remove the metrics folder if it is one this file made."""
        _remove_own_metrics_dir()


def on_starting(server):
    """Stop in one line if another program has the port; forget a previous run's metrics."""
    taken = _taken_address(server)
    if taken is not None:
        host, port = taken
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        print(
            f"piagent: cannot start: port {port} of {host} is taken by another program "
            f"(BIND={where}); choose another port, e.g. BIND=127.0.0.1:0 make demo (any free "
            "port) or BIND=127.0.0.1:8001 make run",
            file=sys.stderr,
            flush=True,
        )
        _remove_own_metrics_dir()  # gunicorn calls on_exit only once it has started
        sys.exit(1)
    if _metrics_dir is not None:
        for path in glob.glob(os.path.join(_metrics_dir, "*.db")):
            os.remove(path)


def _taken_address(server):
    """The first TCP address to bind that another program already listens on, if any.

    gunicorn would try it five times, a second apart, logging two lines each time.
    """
    # Sockets handed over (systemd's socket activation, gunicorn's own re-exec on USR2)
    # are ours already, and a port shared through SO_REUSEPORT is not taken.
    handed_over = os.environ.get("LISTEN_FDS") or os.environ.get("GUNICORN_FD")
    if server.LISTENERS or handed_over or server.cfg.reuse_port:
        return None
    for address in server.cfg.address:
        if not isinstance(address, tuple):  # a unix socket or a file descriptor
            continue
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As gunicorn binds: a port a previous run left in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address[:2])
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return address[:2]
    return None


def _remove_own_metrics_dir():
    if _metrics_dir is not None and os.path.basename(_metrics_dir).startswith(_OWN_METRICS_PREFIX):
        shutil.rmtree(_metrics_dir, ignore_errors=True)
