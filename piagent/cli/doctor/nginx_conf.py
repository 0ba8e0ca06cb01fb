"""Just enough of nginx's configuration syntax to find the proxy settings a location runs with."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

_FILE_MARKER = re.compile(r"^# configuration file (.+):\n", re.M)
_TIME_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")
_TIME_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "M": 2592000,
    "y": 31536000,
}


@dataclass
class Directive:
    """`name args;` or, with `block` set, `name args { ... }`."""

    name: str
    args: list[str]
    line: int
    block: list[Directive] | None = field(default=None, repr=False)


def split_dump(dump: str) -> dict[str, str]:
    """The output of `nginx -T`: each configuration file's path and its text."""
    parts = _FILE_MARKER.split(dump)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def parse(text: str) -> list[Directive]:
    """The directives of one file, blocks nested; comments dropped."""
    top: list[Directive] = []
    stack = [top]
    words: list[str] = []
    start = 1
    for word, line, quoted in _tokens(text):
        if not words:
            start = line
        if quoted or word not in "{};":
            words.append(word)
        elif word == ";" and words:
            stack[-1].append(Directive(words[0], words[1:], start))
            words = []
        elif word == "{":
            block: list[Directive] = []
            stack[-1].append(Directive(words[0] if words else "", words[1:], start, block))
            stack.append(block)
            words = []
        elif word == "}" and len(stack) > 1:
            stack.pop()
            words = []
    return top


def blocks_with(
    directives: Sequence[Directive], name: str, outer: tuple[Directive, ...] = ()
) -> Iterator[tuple[Directive, ...]]:
    """Every block holding a `name` directive, as the chain of blocks from the outermost."""
    for directive in directives:
        if directive.block is None:
            continue
        chain = (*outer, directive)
        if any(d.name == name for d in directive.block):
            yield chain
        yield from blocks_with(directive.block, name, chain)


def effective(
    name: str, chain: Sequence[Directive], inherited: Sequence[Directive]
) -> Directive | None:
    """The `name` directive in force in the innermost block of `chain`, or None.

    Like nginx: the innermost block that sets it wins, then the outer ones, then
    `inherited` (the http level).
    """
    for block in reversed(chain):
        found = [d for d in block.block or () if d.name == name]
        if found:
            return found[-1]
    found = [d for d in inherited if d.name == name]
    return found[-1] if found else None


def simple_directives(directives: Sequence[Directive]) -> list[Directive]:
    """The directives that are not blocks."""
    return [d for d in directives if d.block is None]


def seconds(value: str) -> float | None:
    """An nginx time ("180s", "3m", "1m30s", "90") in seconds; None if it is not one."""
    value = value.replace(" ", "")
    parts = _TIME_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(int(number) * _TIME_UNITS.get(unit, 1) for number, unit in parts)


def _tokens(text: str) -> Iterator[tuple[str, int, bool]]:
    """(word, line, quoted) for each word and each `{`, `}` and `;`."""
    i, line, end = 0, 1, len(text)
    while i < end:
        char = text[i]
        if char == "\n":
            line += 1
            i += 1
        elif char.isspace():
            i += 1
        elif char == "#":
            while i < end and text[i] != "\n":
                i += 1
        elif char in "{};":
            yield char, line, False
            i += 1
        elif char in "\"'":
            word, i, start = [], i + 1, line
            while i < end and text[i] != char:
                if text[i] == "\\" and i + 1 < end:
                    i += 1
                line += text[i] == "\n"
                word.append(text[i])
                i += 1
            yield "".join(word), start, True
            i += 1
        else:
            start = i
            while i < end and not text[i].isspace() and text[i] not in "{};":
                # ${name}: braces inside a variable name are not a block.
                if text[i] == "$" and i + 1 < end and text[i + 1] == "{":
                    i = text.find("}", i) + 1 or end
                    continue
                i += 1
            yield text[start:i], line, False
