import pytest

from piagent.providers.sse import MalformedEvent
from piagent.providers.sse import iter_sse_data as iter_batches

EVENTS = b'data: {"a": 1}\n\ndata: {"b": "two"}\n\ndata: [DONE]\n\n'
EXPECTED = ['{"a": 1}', '{"b": "two"}', "[DONE]"]


def iter_sse_data(reads):
    """Each event's data, whichever read brought it."""
    return [data for batch in iter_batches(reads) for data in batch]


def test_one_event_per_read():
    reads = [e + b"\n\n" for e in EVENTS.split(b"\n\n") if e]
    assert list(iter_sse_data(reads)) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_events_split_across_reads_are_reassembled(size):
    chunks = [EVENTS[i : i + size] for i in range(0, len(EVENTS), size)]
    assert list(iter_sse_data(chunks)) == EXPECTED


def test_several_events_in_one_read():
    assert list(iter_sse_data([EVENTS])) == EXPECTED


def test_events_are_handed_on_together_by_the_read_that_ends_them():
    first, second = EVENTS[:10], EVENTS[10:]  # the first read ends no event
    assert list(iter_batches([first, second])) == [EXPECTED]
    assert list(iter_batches([b": ping\n\n", EVENTS])) == [EXPECTED]  # nothing for a comment


def test_events_before_an_unreadable_line_are_handed_on_before_it_raises():
    batches = iter_batches([b"data: a\n\ndata: b\n\ndata: \xff\n\n"])
    assert next(batches) == ["a", "b"]
    with pytest.raises(MalformedEvent):
        next(batches)


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
def test_every_line_ending_the_format_allows(newline):
    data = EVENTS.replace(b"\n", newline)
    assert list(iter_sse_data([data])) == EXPECTED
    assert list(iter_sse_data([data[i : i + 1] for i in range(len(data))])) == EXPECTED


def test_crlf_split_between_reads_is_one_line_end():
    # Read as two line ends, the CR and the LF would end the event after "a".
    reads = [b"data: a\r", b"\ndata: b\r", b"\n\r\n"]
    assert list(iter_sse_data(reads)) == ["a\nb"]


def test_each_event_is_handed_on_before_the_next_read():
    reads: list[int] = []

    def chunks():
        for index, event in enumerate(EXPECTED):
            reads.append(index)
            yield f"data: {event}\n\n".encode()

    for index, _ in enumerate(iter_batches(chunks())):
        assert reads[-1] == index  # nothing read ahead of the event handed on


def test_comments_and_other_fields_are_skipped():
    data = b": ping\n\nevent: message\nid: 7\nretry: 100\ndata: x\n\n: ping\n\n"
    assert list(iter_sse_data([data])) == ["x"]


def test_data_without_space_and_multiline_data():
    assert list(iter_sse_data([b"data:x\ndata:  y\n\n"])) == ["x\n y"]


def test_multibyte_character_split_between_reads():
    data = 'data: {"t": "é😀"}\n\n'.encode()
    assert list(iter_sse_data([data[:12], data[12:15], data[15:]])) == ['{"t": "é😀"}']


def test_event_cut_off_by_the_end_of_the_stream_is_dropped():
    assert list(iter_sse_data([b"data: whole\n\ndata: cut"])) == ["whole"]
    assert list(iter_sse_data([b"data: whole\n\ndata: cut\n"])) == ["whole"]


def test_text_that_is_not_utf8_raises():
    with pytest.raises(MalformedEvent):
        list(iter_sse_data([b"data: \xff\xfe\n\n"]))
