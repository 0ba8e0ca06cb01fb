"""A check's outcome and how the report prints it: a mark, what was found, and the fix."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from typing import TextIO


class Outcome(Enum):
    """Passed, failed (with a fix), or not applicable to this machine (not a failure)."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True)
class Check:
    """One line of the report; a failed check carries the exact fix."""

    outcome: Outcome
    text: str
    fix: str | None = None


def passed(text: str) -> Check:
    """A check that passed."""
    return Check(Outcome.PASSED, text)


def failed(text: str, fix: str) -> Check:
    """A check that failed, with what to run or change."""
    return Check(Outcome.FAILED, text, fix)


def not_applicable(text: str) -> Check:
    """A check that does not apply here (e.g. no nginx installed); not a failure."""
    return Check(Outcome.NOT_APPLICABLE, text)


_MARKS = {Outcome.PASSED: "✔", Outcome.FAILED: "✘", Outcome.NOT_APPLICABLE: "–"}
# For a terminal whose encoding has no ✔ (a C locale over an old SSH client).
_ASCII_MARKS = {Outcome.PASSED: "ok", Outcome.FAILED: "FAIL", Outcome.NOT_APPLICABLE: "n/a"}


class Report:
    """Prints each check as it comes and counts the failures."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self.failures = 0
        try:
            "".join(_MARKS.values()).encode(self._out.encoding or "ascii")
            self._marks = _MARKS
        except UnicodeEncodeError:
            self._marks = _ASCII_MARKS

    def add(self, check: Check) -> None:
        """Print the check now (a slow one after it should not hold back this line)."""
        if check.outcome is Outcome.FAILED:
            self.failures += 1
        print(f"{self._marks[check.outcome]} {check.text}", file=self._out)
        if check.fix:
            print(f"    fix: {check.fix}", file=self._out)
        self._out.flush()

    def summary(self) -> str:
        """The last line: how many checks failed."""
        if not self.failures:
            return "no problems found"
        return f"{self.failures} check{'s' if self.failures > 1 else ''} failed"
