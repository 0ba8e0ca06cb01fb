import pytest

from piagent.providers.ndjson import MalformedLine
from piagent.providers.ndjson import iter_ndjson as iter_batches

LINES = [b'{"a": 1}\n', b'{"b": "two"}\n', b'{"done": true, "c": "x"}\n']


def iter_ndjson(reads):
    """Each object, whichever read brought it."""
    return [obj for batch in iter_batches(reads) for obj in batch]


def test_one_line_per_read():
    assert list(iter_ndjson(LINES)) == [{"a": 1}, {"b": "two"}, {"done": True, "c": "x"}]


def test_line_split_across_reads_is_reassembled():
    data = b"".join(LINES)
    chunks = [data[i : i + 3] for i in range(0, len(data), 3)]
    assert list(iter_ndjson(chunks)) == list(iter_ndjson(LINES))


def test_several_lines_in_one_read():
    assert len(list(iter_ndjson([b"".join(LINES)]))) == 3


def test_objects_are_handed_on_together_by_the_read_that_ends_them():
    data = b"".join(LINES)
    cut = len(LINES[0]) + 3  # the first read ends one line, the second the other two
    assert list(iter_batches([data[:cut], data[cut:]])) == [
        [{"a": 1}],
        [{"b": "two"}, {"done": True, "c": "x"}],
    ]
    assert list(iter_batches([b'{"a"', b": 1}"])) == [[{"a": 1}]]  # no empty batch


def test_objects_before_a_malformed_line_are_handed_on_before_it_raises():
    batches = iter_batches([b'{"a": 1}\n{"b": 2}\nnot json\n{"c": 3}\n'])
    assert next(batches) == [{"a": 1}, {"b": 2}]
    with pytest.raises(MalformedLine):
        next(batches)


def test_last_line_without_newline():
    assert list(iter_ndjson([b'{"a": 1}\n{"b": 2}'])) == [{"a": 1}, {"b": 2}]


def test_blank_lines_are_ignored():
    assert list(iter_ndjson([b'\n{"a": 1}\n\r\n\n'])) == [{"a": 1}]


def test_each_object_is_handed_on_before_the_next_read():
    reads: list[int] = []

    def chunks():
        for index, line in enumerate(LINES):
            reads.append(index)
            yield line

    for index, _ in enumerate(iter_batches(chunks())):
        assert reads[-1] == index  # nothing read ahead of the object handed on


def test_multibyte_character_split_between_reads():
    data = '{"t": "é😀"}\n'.encode()
    assert list(iter_ndjson([data[:8], data[8:10], data[10:]])) == [{"t": "é😀"}]


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b'{"a": \n'])
def test_malformed_line_raises(line):
    with pytest.raises(MalformedLine):
        list(iter_ndjson([b'{"ok": 1}\n', line]))


def test_crlf_line_ends_and_surrounding_spaces():
    assert list(iter_ndjson([b' {"a": 1}\r\n\r\n{"b": 2}\r\n'])) == [{"a": 1}, {"b": 2}]


def test_a_line_that_is_not_utf8_raises_after_the_lines_before_it():
    batches = iter_batches([b'{"a": 1}\n{"b": "\xff"}\n{"c": 3}\n'])
    assert next(batches) == [{"a": 1}]
    with pytest.raises(MalformedLine, match=r"xff"):
        next(batches)


@pytest.mark.parametrize(
    "line",
    [b'{"a": 1}{"b": 2}\n', b'{"a": 1} x\n', b"[" * 100_000 + b"\n", b'"text"\n', b"NaNx\n"],
    ids=["two-objects", "trailing-text", "deep-nesting", "a-string", "not-a-constant"],
)
def test_a_line_that_is_not_exactly_one_object_raises(line):
    # Whatever the fast path parses, it hands on only a whole line that is one object.
    with pytest.raises(MalformedLine):
        list(iter_ndjson([b'{"ok": 1}\n', line]))


def test_spaces_around_an_object_are_allowed():
    assert list(iter_ndjson([b'{"a": 1}  \n\t{"b": 2}\r\n'])) == [{"a": 1}, {"b": 2}]
