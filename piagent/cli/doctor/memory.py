"""The conversation memory: can the SQLite file be written, does Redis answer?"""

from __future__ import annotations

import getpass
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .report import Check, failed, not_applicable, passed

if TYPE_CHECKING:
    from ...settings import Settings

_SQLITE_HEADER = b"SQLite format 3\x00"


def check_memory(settings: Settings, longest_reply_tokens: int) -> Check:
    """The backend MEMORY_BACKEND names, used as the server would use it."""
    if not settings.enable_memory:
        return not_applicable("memory: off (ENABLE_MEMORY=false), nothing to check")
    if settings.memory_backend == "sqlite":
        return _check_sqlite(settings.memory_path)
    if settings.memory_backend == "redis":
        return _check_redis(settings, longest_reply_tokens)
    return passed("memory: in each worker's RAM (MEMORY_BACKEND=memory; lost on restart)")


def _check_sqlite(path: Path) -> Check:
    """Whether this user could open `path` for writing, without creating or changing anything.

    The server creates the file and its folders itself; doing it here could leave them
    owned by whoever runs doctor (often root), which the service's user then cannot write.
    """
    user = getpass.getuser()
    fix = (
        f"let the service's user write there (sudo install -d -o piagent -g piagent "
        f"{path.parent}), or set MEMORY_PATH to a writable place such as "
        "/var/lib/piagent/memory.sqlite3 (the shipped unit's state directory)"
    )
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        return failed(f"memory: MEMORY_PATH {path} cannot be created: {folder} is a file", fix)
    try:
        # A real attempt, not os.access: root passes os.access on read-only places too.
        # SQLite also writes its -wal and -shm files beside the database.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return failed(f"memory: {user} cannot create files in {folder} ({exc.strerror})", fix)
    if not path.exists():
        return passed(f"memory: SQLite file {path} can be created in {folder} (as {user})")
    try:
        # Opened for writing but only read: its header says whether it is a database.
        # (sqlite3 itself, even read-only, may create -wal and -shm files owned by this user.)
        with open(path, "r+b") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return failed(f"memory: {user} cannot write MEMORY_PATH {path} ({exc.strerror})", fix)
    if header not in (b"", _SQLITE_HEADER):  # SQLite makes an empty file a database
        return failed(
            f"memory: MEMORY_PATH {path} is not a SQLite database",
            f"move {path} aside (piagent then starts a new file) or point MEMORY_PATH elsewhere",
        )
    return passed(f"memory: SQLite file {path} is writable (as {user})")


def _check_redis(settings: Settings, longest_reply_tokens: int) -> Check:
    """PING through the server's own store, so the message names that Redis as /ready does."""
    from ...errors import MemoryUnavailable
    from ...memory.factory import memory_limits
    from ...memory.redis_store import RedisStore

    try:
        store = RedisStore(settings.redis_url, memory_limits(settings, longest_reply_tokens))
    except ValueError as exc:  # a URL the client cannot use
        return failed(
            f"memory: REDIS_URL cannot be used: {exc}",
            "correct REDIS_URL (redis://[:password@]host:6379/0)",
        )
    try:
        store.check()
    except MemoryUnavailable as exc:
        return failed(
            f"memory: {exc.detail}",
            "start Redis (sudo systemctl start redis-server) or correct REDIS_URL; with "
            "requirepass set, put the password in it (redis://:password@host:6379/0)",
        )
    finally:
        store.close()
    return passed("memory: Redis answers PING (MEMORY_BACKEND=redis)")


def _nearest_existing(folder: Path) -> Path:
    """`folder`, or its closest ancestor that exists (the server creates the rest)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
