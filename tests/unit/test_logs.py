"""The two log line shapes."""

from __future__ import annotations

import json
import logging
import re
import sys

from piagent.ops.logs import JsonFormatter, TextFormatter, printable


def record(**fields) -> logging.LogRecord:
    made = logging.LogRecord("piagent.access", logging.INFO, __file__, 1, "request", None, None)
    made.fields = fields
    return made


def test_text_line_has_key_value_pairs_and_skips_missing_values():
    line = TextFormatter().format(record(method="GET", status=200, ttft_ms=None, agent="my agent"))
    assert line.endswith('[INFO] request method=GET status=200 agent="my agent"')


def test_json_line_is_one_object_with_the_fields_on_top():
    line = JsonFormatter().format(record(method="GET", status=200, ttft_ms=None))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["msg"] == "request"
    assert entry["level"] == "info"
    assert (entry["method"], entry["status"], entry["ttft_ms"]) == ("GET", 200, None)


def test_json_line_keeps_a_traceback_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.LogRecord(
            "piagent", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    line = JsonFormatter().format(made)
    entry = json.loads(line)
    assert entry["msg"] == "failed x"
    assert "ValueError: boom" in entry["exc"]
    assert "\n" not in line


# Everything a client or a model server could slip in to end a line, forge another, or
# rewrite a terminal: CR, LF, NUL, ESC, DEL, NEL (a C1 control), LINE SEPARATOR.
HOSTILE = "boom\r\n2025-01-01 00:00:00,000 [1] [INFO] forged\x00\x1b[2J\x7f\x85\u2028end"
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def hostile_record(**fields) -> logging.LogRecord:
    made = logging.LogRecord(
        "piagent", logging.WARNING, __file__, 1, "upstream failure (%d): %s", (502, HOSTILE), None
    )
    made.fields = fields
    return made


def test_text_line_escapes_every_control_character_in_message_and_fields():
    line = TextFormatter().format(hostile_record(path=HOSTILE, key="abc\n"))
    assert not UNSAFE.search(line)
    assert "boom\\r\\n2025-01-01" in line and "\\u001b[2J" in line and "\\u2028end" in line
    assert 'key="abc\\n"' in line  # a trailing newline does not pass for a bare value


def test_json_line_escapes_what_json_itself_leaves_raw():
    line = JsonFormatter().format(hostile_record(path=HOSTILE))
    assert not UNSAFE.search(line)
    entry = json.loads(line)
    assert entry["msg"] == f"upstream failure (502): {HOSTILE}"  # the same text, read back
    assert entry["path"] == HOSTILE


def test_text_traceback_keeps_its_lines_and_the_message_stays_on_its_own():
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.LogRecord(
            "piagent", logging.ERROR, __file__, 1, "failed %s", ("a\nb",), sys.exc_info()
        )
    first, *rest = TextFormatter().format(made).splitlines()
    assert first.endswith("failed a\\nb")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


def test_printable_escapes_only_control_characters():
    assert printable('é 😀 "quoted" tab\there\n') == 'é 😀 "quoted" tab\\there\\n'
