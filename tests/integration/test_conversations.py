"""Memory through the app on every backend: the conversation API, the context budget, holds."""

from __future__ import annotations

import socket
from datetime import datetime
from urllib.parse import urlsplit

import pytest
import requests

from piagent.app import create_app
from piagent.chat.budget import estimate_tokens
from piagent.http.relay import StreamInterrupted
from piagent.memory.base import Message
from tests.fake_ollama import count_prompt_tokens
from tests.http_raw import read_head
from tests.servers import free_port


@pytest.fixture
def client(build_client):
    return build_client()


def chat(client, message="hi", **body):
    return client.post("/chat", json={"message": message, **body})


# --- GET and DELETE /conversations/<id> ---------------------------------------------------


def test_conversation_shows_each_message_with_its_time(client, fake):
    fake.behave(tokens=["one"])
    chat(client, "first", conversation_id="c-1")
    fake.behave(tokens=["two"])
    chat(client, "second", conversation_id="c-1", stream=True).get_data()
    response = client.get("/conversations/c-1")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.get_json()
    assert body["conversation_id"] == "c-1"
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "first"),
        ("assistant", "one"),
        ("user", "second"),
        ("assistant", "two"),
    ]
    times = [datetime.fromisoformat(m["timestamp"]) for m in body["messages"]]
    assert all(t.utcoffset().total_seconds() == 0 for t in times)
    assert times == sorted(times)
    assert abs((datetime.now(times[0].tzinfo) - times[-1]).total_seconds()) < 60


def test_unknown_conversation_is_404_for_both_methods(client):
    for method in (client.get, client.delete):
        response = method("/conversations/never-seen")
        assert response.status_code == 404
        assert "never-seen" in response.get_json()["detail"]


def test_delete_forgets_the_conversation(client, fake):
    chat(client, "remember me", conversation_id="gone")
    response = client.delete("/conversations/gone")
    assert response.status_code == 204
    assert response.data == b""
    assert client.get("/conversations/gone").status_code == 404
    chat(client, "again", conversation_id="gone")
    assert fake.last_messages()[1:] == [("user", "again")]


def test_delete_answers_204_without_a_body_or_a_content_type(served, fake):
    chat_reply = requests.post(
        f"{served.url}/chat", json={"message": "hi", "conversation_id": "c"}, timeout=10
    )
    assert chat_reply.status_code == 200
    # Read off the wire: a test client would not show what the server adds or leaves out.
    url = urlsplit(served.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"DELETE /conversations/c HTTP/1.1\r\nHost: piagent\r\n\r\n")
        status, headers = read_head(sock.makefile("rb"))
    assert status == 204
    assert "content-type" not in headers
    assert headers.get("content-length", "0") == "0"


def test_delete_while_a_message_is_answered_is_409_and_forgets_nothing(client, fake):
    chat(client, "remember me", conversation_id="busy")
    unread = chat(client, "still answering", conversation_id="busy", stream=True)
    refused = client.delete("/conversations/busy")
    assert refused.status_code == 409
    assert "'busy'" in refused.get_json()["detail"]
    assert client.get("/conversations/busy").status_code == 200
    unread.close()
    assert client.delete("/conversations/busy").status_code == 204
    assert chat(client, conversation_id="busy").status_code == 200  # the delete let go


@pytest.mark.parametrize("bad_id", ["a%20b", "x" * 129, "semi;colon", "%C3%A9"])
def test_an_id_breaking_the_rules_is_422_naming_it(client, bad_id):
    for method in (client.get, client.delete):
        response = method(f"/conversations/{bad_id}")
        assert response.status_code == 422
        assert response.get_json()["detail"][0]["loc"] == ["path", "conversation_id"]


def test_conversation_with_a_failed_reply_was_never_kept(client, fake):
    fake.behave(status=500)
    assert chat(client, conversation_id="failed").status_code == 502
    assert client.get("/conversations/failed").status_code == 404


def test_without_memory_there_is_no_conversation_to_show(make_settings, fake):
    client = create_app(make_settings(enable_memory=False)).test_client()
    chat(client, conversation_id="x")
    response = client.get("/conversations/x")
    assert response.status_code == 404
    assert "ENABLE_MEMORY" in response.get_json()["detail"]


# --- GET /conversations --------------------------------------------------------------------


def test_conversation_list_shows_the_callers_conversations_newest_first(client, fake):
    chat(client, "first question " + "x" * 100, conversation_id="older")
    chat(client, "another", conversation_id="newer", stream=True).get_data()
    response = client.get("/conversations")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    listed = response.get_json()["conversations"]
    assert [c["conversation_id"] for c in listed] == ["newer", "older"]
    assert listed[1]["title"] == ("first question " + "x" * 100)[:80]
    assert [c["messages"] for c in listed] == [2, 2]
    updated = [datetime.fromisoformat(c["updated_at"]) for c in listed]
    assert all(t.utcoffset().total_seconds() == 0 for t in updated)
    assert listed[0]["updated_at"].endswith("Z")
    last_message = client.get("/conversations/newer").get_json()["messages"][-1]
    assert listed[0]["updated_at"] == last_message["timestamp"]


def test_conversation_list_is_empty_not_404_when_there_is_none(client):
    response = client.get("/conversations")
    assert response.status_code == 200
    assert response.get_json() == {"conversations": []}


def test_conversation_list_limit_takes_the_newest(client, fake):
    for i in range(3):
        chat(client, f"q{i}", conversation_id=f"c{i}")
    listed = client.get("/conversations?limit=2").get_json()["conversations"]
    assert [c["conversation_id"] for c in listed] == ["c2", "c1"]
    everything = client.get("/conversations?limit=200").get_json()["conversations"]
    assert len(everything) == 3


@pytest.mark.parametrize("limit", ["0", "201", "-1", "many", ""])
def test_conversation_list_limit_out_of_range_is_422_naming_it(client, limit):
    response = client.get(f"/conversations?limit={limit}")
    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["query", "limit"]


def test_conversation_list_is_per_api_key(build_client, fake):
    keys = ("key-a-0123456789abcdef", "key-b-0123456789abcdef")
    client = build_client(api_keys=",".join(keys))
    headers = [{"Authorization": f"Bearer {key}"} for key in keys]
    client.post("/chat", json={"message": "A's", "conversation_id": "a1"}, headers=headers[0])
    client.post("/chat", json={"message": "B's", "conversation_id": "b1"}, headers=headers[1])
    for h, expected in zip(headers, [("a1", "A's"), ("b1", "B's")], strict=True):
        listed = client.get("/conversations", headers=h).get_json()["conversations"]
        assert [(c["conversation_id"], c["title"]) for c in listed] == [expected]
    assert client.get("/conversations").status_code == 401


def test_conversation_list_leaves_out_a_deleted_conversation(client, fake):
    chat(client, conversation_id="kept")
    chat(client, conversation_id="deleted")
    client.delete("/conversations/deleted")
    listed = client.get("/conversations").get_json()["conversations"]
    assert [c["conversation_id"] for c in listed] == ["kept"]


def test_without_memory_the_conversation_list_is_empty(make_settings, fake):
    client = create_app(make_settings(enable_memory=False)).test_client()
    chat(client, conversation_id="x")
    response = client.get("/conversations")
    assert response.status_code == 200
    assert response.get_json() == {"conversations": []}


# --- the context budget -------------------------------------------------------------------


def test_a_conversation_outgrowing_the_context_keeps_the_system_prompt_and_newest_turns(
    build_client, fake
):
    client = build_client(ctx_tokens=400, max_tokens=50, memory_max_turns=100)
    for i in range(8):
        fake.behave(tokens=[f"answer {i} ".ljust(60, "a")])
        chat(client, f"question {i} ".ljust(60, "q"), conversation_id="long")
    messages = fake.last_messages()
    assert messages[0][0] == "system"
    assert messages[-1] == ("user", "question 7 ".ljust(60, "q"))
    history = messages[1:-1]
    assert 0 < len(history) < 14  # some, not all, of the seven earlier exchanges
    assert history[0][0] == "user"  # whole exchanges only
    kept = len(history) // 2
    assert [content[:10] for _, content in history[::2]] == [
        f"question {i}"[:10] for i in range(7 - kept, 7)
    ]
    # The fake reports its own counts, below the estimate: calibrated to them, piagent may
    # send more than the estimate alone allows, but never more than the model can hold.
    assert count_prompt_tokens(content for _, content in messages) <= 400 - 50


def test_a_message_too_long_for_the_context_is_422_and_never_sent(build_client, fake):
    client = build_client(ctx_tokens=300, max_tokens=100)
    response = chat(client, "x" * 900, conversation_id="big")
    assert response.status_code == 422
    (item,) = response.get_json()["detail"]
    assert item["loc"] == ["body", "message"]
    assert "CTX_TOKENS 300" in item["msg"]
    assert fake.requests == []
    assert chat(client, "short", conversation_id="big").status_code == 200  # not left held


def long_conversation(client, fake, turns: int) -> None:
    """Turns in conversation "learn" with no count reported, so the estimate alone trims."""
    for i in range(turns):
        fake.behave(tokens=["r" * 60], prompt_eval_count=0)
        chat(client, f"{i}".ljust(60, "q"), conversation_id="learn")


def prompt_estimate(fake) -> int:
    return sum(
        estimate_tokens(Message(m["role"], m["content"]))
        for m in fake.requests[-1].json["messages"]
    )


def history_sent(fake) -> int:
    return len(fake.requests[-1].json["messages"]) - 2


def test_a_model_counting_more_tokens_than_estimated_makes_the_trim_deeper(build_client, fake):
    client = build_client(ctx_tokens=500, max_tokens=50, memory_max_turns=100)
    long_conversation(client, fake, 8)
    before = history_sent(fake)
    fake.behave(tokens=["r" * 60], prompt_eval_count=2 * prompt_estimate(fake))
    chat(client, "counted".ljust(60, "q"), conversation_id="learn")
    fake.behave(tokens=["r" * 60])
    chat(client, "after".ljust(60, "q"), conversation_id="learn")
    assert history_sent(fake) < before
    assert fake.last_messages()[-2] == ("assistant", "r" * 60)  # still the newest exchange


def test_a_model_counting_fewer_tokens_than_estimated_lets_more_history_in(build_client, fake):
    client = build_client(ctx_tokens=500, max_tokens=50, memory_max_turns=100)
    long_conversation(client, fake, 8)
    before = history_sent(fake)
    assert before < 2 * 7  # the estimate alone leaves some of the seven exchanges out
    fake.behave(tokens=["r" * 60], prompt_eval_count=int(0.6 * prompt_estimate(fake)))
    chat(client, "counted".ljust(60, "q"), conversation_id="learn")
    fake.behave(tokens=["r" * 60])
    chat(client, "after".ljust(60, "q"), conversation_id="learn")
    assert history_sent(fake) > before


def test_a_model_with_a_denser_tokenizer_gets_its_history_trimmed_sooner(build_client, fake):
    ctx_tokens, max_tokens = 1024, 100
    room = ctx_tokens - max_tokens
    client = build_client(ctx_tokens=ctx_tokens, max_tokens=max_tokens, memory_max_turns=100)

    def converse(conversation_id: str, bytes_per_token: float) -> list[list[str]]:
        """Ten turns; the contents sent to the fake at each, while it counts at this density."""
        sent = []
        for i in range(10):
            fake.behave(tokens=["r" * 60], bytes_per_token=bytes_per_token)
            chat(client, f"{i}".ljust(60, "q"), conversation_id=conversation_id)
            sent.append([content for _, content in fake.last_messages()])
        return sent

    # Three bytes a token is piagent's own estimate, so these counts match it; the dense
    # model makes twice as many tokens of the same text.
    matching = converse("matching", bytes_per_token=3)
    dense = converse("dense", bytes_per_token=1.5)

    assert dense[0] == matching[0]  # the same first prompt: nothing learnt yet
    assert [len(p) for p in matching] == [2 + 2 * turn for turn in range(10)]  # all kept
    assert all(len(d) <= len(m) for d, m in zip(dense, matching, strict=True))
    assert len(dense[-1]) < len(matching[-1])  # the dense one has lost its oldest turns
    assert dense[-1][1:] == matching[-1][-(len(dense[-1]) - 1) :]  # the newest, whole
    # Counted by the dense model, every prompt it got fits its context; trimmed by the
    # estimate alone, the same conversation would not have.
    assert all(count_prompt_tokens(prompt, 1.5) <= room for prompt in dense)
    assert count_prompt_tokens(matching[-1], 1.5) > room


# --- holds and failures --------------------------------------------------------------------


def test_a_stream_whose_body_is_never_read_frees_the_conversation_when_closed(client, fake):
    unread = chat(client, conversation_id="unread", stream=True)
    assert chat(client, conversation_id="unread").status_code == 409
    unread.close()
    assert chat(client, conversation_id="unread").status_code == 200


def test_a_failed_stream_frees_the_conversation(client, fake):
    fake.behave(tokens=["a", "b", "c"], error_after=1)
    with pytest.raises(StreamInterrupted):  # the server drops the connection unfinished
        chat(client, conversation_id="broken", stream=True).get_data()
    fake.behave(tokens=["fine"])
    assert chat(client, conversation_id="broken").status_code == 200


def test_unreachable_redis_is_503_naming_it_and_ollama_is_not_called(make_settings, fake):
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    client = create_app(make_settings(memory_backend="redis", redis_url=url)).test_client()
    for response in (chat(client, conversation_id="x"), client.get("/conversations/x")):
        assert response.status_code == 503
        detail = response.get_json()["detail"]
        assert "redis://127.0.0.1:" in detail and "not reachable" in detail
        assert "secret" not in detail
    assert fake.requests == []


def test_unusable_memory_path_stops_the_start_naming_it(make_settings, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    settings = make_settings(memory_backend="sqlite", memory_path=tmp_path / "a-file" / "m.db")
    with pytest.raises(SystemExit) as stopped:
        create_app(settings)
    assert stopped.value.code == 4
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("piagent: cannot start: MEMORY_PATH")
