"""The readiness cache: one check per interval, failures included, shared by concurrent probes."""

from __future__ import annotations

import threading

from piagent.errors import UpstreamError
from piagent.ops.readiness import ReadinessProbe


class Check:
    """A check that counts its calls and fails while `problem` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.problem: str | None = None
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> None:
        self.calls += 1
        self.release.wait(5)
        if self.problem:
            raise UpstreamError(self.problem)


def test_answer_is_reused_until_the_interval_has_passed():
    check, now = Check(), [0.0]
    probe = ReadinessProbe(check, cache_s=5, clock=lambda: now[0])
    assert probe.problem() is None
    check.problem = "down"
    now[0] = 4.99
    assert probe.problem() is None
    now[0] = 5.0
    assert probe.problem() == "down"
    now[0] = 9.0
    check.problem = None
    assert probe.problem() == "down"  # a failure is cached as well
    assert check.calls == 2


def test_concurrent_probes_share_one_check():
    check = Check()
    check.release.clear()
    probe = ReadinessProbe(check, cache_s=60)
    results: list[str | None] = []
    threads = [threading.Thread(target=lambda: results.append(probe.problem())) for _ in range(5)]
    for thread in threads:
        thread.start()
    check.release.set()
    for thread in threads:
        thread.join(5)
    assert results == [None] * 5
    assert check.calls == 1
