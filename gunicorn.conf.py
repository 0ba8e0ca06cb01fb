"""gunicorn settings for piagent, read from the environment (and `.env`).

Never imports the application: gunicorn's gevent worker must patch the standard
library before piagent (and requests) are imported in the worker.
"""

import os
import sys

from dotenv import dotenv_values

_env = {**dotenv_values(".env"), **os.environ}

# Socket: loopback by default; nginx in front is the public face.
bind = _env.get("BIND") or "127.0.0.1:8000"

# Workers: one by default. With MEMORY_BACKEND=memory conversations live in the
# worker's RAM, where a second worker would not see them, so it stays at one; the
# sqlite and redis backends are shared, and any number of workers may use them.
workers = int(_env.get("WEB_CONCURRENCY") or 1)
_memory_on = (_env.get("ENABLE_MEMORY") or "true").lower() not in ("0", "false", "no", "n")
if workers > 1 and _memory_on and (_env.get("MEMORY_BACKEND") or "memory") == "memory":
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
graceful_timeout = 30
keepalive = 5

# No preload_app: sessions and locks must be created after gevent has patched.
preload_app = False

# Logging: to stderr, where systemd's journal picks it up.
accesslog = _env.get("ACCESS_LOG", "-") or None  # empty: no access log
errorlog = "-"
loglevel = _env.get("LOG_LEVEL") or "info"

# Control socket (gunicornc): unused here, and several instances would share its path.
control_socket_disable = True
