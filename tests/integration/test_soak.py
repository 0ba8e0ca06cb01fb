"""The soak of bench/soak.py, shortened: a thousand mixed requests leave the worker as it was."""

from __future__ import annotations

import pytest

from bench.soak import BOUNDS, soak

pytestmark = pytest.mark.gunicorn


def test_a_thousand_mixed_requests_leave_the_worker_as_they_found_it(tmp_path):
    report = soak(1000, log_dir=tmp_path)
    print("\n".join(report.lines()))  # the figures, with -s or -rA
    assert report.broken == []
    seen = {ending for _, ending in report.tally.outcomes}
    # Every way an answer can end came up: whole, cut short, refused for each reason.
    assert {"done", "cut", "left", 404, 405, 409, 413, 422, 502, 503, 504} <= seen
    assert report.after["conversations kept"] == BOUNDS["conversations kept"][1]
