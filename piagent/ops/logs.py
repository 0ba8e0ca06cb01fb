"""Where piagent's log lines go, and their two shapes: readable text or one JSON object.

A record may carry `fields` (a dict, via `extra=`): text lines show them as
`key=value` pairs after the message, JSON lines as top-level keys.

Text from clients and model servers reaches the log (an error message, a path), so no
control character is written raw: a CR or LF would let it forge a line of its own, an
escape sequence would rewrite the terminal showing it. They are escaped the way JSON
escapes them (a backslash and `n`, `u001b`, ...), in both shapes; a traceback keeps
its own lines.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

_TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
# The C0 and C1 controls (CR, LF, ESC, NEL, ...) and Unicode's line and paragraph
# separators, which some readers also take as the end of a line.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BARE_VALUE = re.compile(r"[^\s\"=]+")


def printable(value: object) -> str:
    """`value` as text safe inside one log line: control characters escaped as in JSON."""
    return _UNSAFE.sub(_escape, str(value))


def _escape(match: re.Match[str]) -> str:
    return json.dumps(match.group())[1:-1]  # "\n", "\u001b", "\u2028"


class TextFormatter(logging.Formatter):
    """gunicorn-like lines, with a record's fields as `key=value` pairs (None left out)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        """The line, followed by the record's fields."""
        line = printable(super().formatMessage(record))
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            pairs = (f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None)
            line = " ".join((line, *pairs))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a record's fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a single line of JSON."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # json.dumps escapes C0 controls itself but writes the others as they are.
        return printable(json.dumps(entry, ensure_ascii=False, default=str))


def configure_logging(log_format: str) -> None:
    """Give the `piagent` logger a stderr handler in `log_format` unless the host has logging."""
    logger = logging.getLogger("piagent")
    handler = next((h for h in logger.handlers if getattr(h, "piagent_own", False)), None)
    # The host's own logging set-up (pytest's, a server's) wins over ours.
    if logging.getLogger().handlers or (handler is None and logger.handlers):
        return
    if handler is None:
        handler = logging.StreamHandler()
        handler.piagent_own = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.setLevel(logging.INFO)


def _text_value(value: Any) -> str:
    text = str(value)
    if _BARE_VALUE.fullmatch(text) and not _UNSAFE.search(text):
        return text
    return printable(json.dumps(text, ensure_ascii=False))
