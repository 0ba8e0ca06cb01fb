"""The two log line shapes."""

from __future__ import annotations

import json
import logging
import sys

from piagent.ops.logs import JsonFormatter, TextFormatter


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
