import pytest
from pydantic import ValidationError

from piagent.http.schemas import ChatRequest


def error_locs(body: bytes) -> list[tuple]:
    with pytest.raises(ValidationError) as caught:
        ChatRequest.model_validate_json(body)
    return [tuple(e["loc"]) for e in caught.value.errors()]


def test_defaults():
    request = ChatRequest.model_validate_json(b'{"message": "hi"}')
    assert (request.agent, request.stream, request.conversation_id) == ("general", False, None)


def test_message_of_4000_emoji_is_accepted():
    assert len(ChatRequest(message="😀" * 4000).message) == 4000


@pytest.mark.parametrize("message", ["", " \n\t ", "x" * 4001])
def test_bad_message_is_rejected(message):
    with pytest.raises(ValidationError):
        ChatRequest(message=message)


@pytest.mark.parametrize(
    "body",
    [b'{"message": "hi", "stream": "yes"}', b'{"message": "hi", "stream": 1}'],
)
def test_stream_is_not_coerced(body):
    assert error_locs(body) == [("stream",)]


def test_message_must_be_a_string():
    assert error_locs(b'{"message": 42}') == [("message",)]


@pytest.mark.parametrize("cid", ["", "a b", "x" * 129, "abc\r\nSet-Cookie: x", "é", "a/b"])
def test_bad_conversation_id_is_rejected(cid):
    with pytest.raises(ValidationError):
        ChatRequest(message="hi", conversation_id=cid)


def test_good_conversation_id_is_accepted():
    cid = "Abc-1.2_3:" + "x" * 118
    assert ChatRequest(message="hi", conversation_id=cid).conversation_id == cid


def test_null_conversation_id_means_new():
    assert (
        ChatRequest.model_validate_json(b'{"message":"hi","conversation_id":null}').conversation_id
        is None
    )


def test_unknown_fields_are_ignored():
    assert ChatRequest.model_validate_json(b'{"message": "hi", "colour": "blue"}').message == "hi"
