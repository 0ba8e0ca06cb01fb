"""`piagent chat` on a pseudo-terminal, against real gunicorn in front of the fake Ollama."""

from __future__ import annotations

import re

import pytest
import requests

from tests.cli import PIAGENT, cli_env, closed_by_client
from tests.servers import REPO, free_port, gunicorn
from tests.terminal import CTRL_C, CTRL_D, Terminal

KEY = "chat-test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
PROMPT = "general> "
CONVERSATION_LINE = r"\(conversation (\S+); piagent chat --conversation \1 continues it\)"


@pytest.fixture(scope="module")
def server(module_fake, tmp_path_factory):
    env = {"OLLAMA_HOST": module_fake.url, "ACCESS_LOG": "", "API_KEYS": KEY}
    with gunicorn(env, tmp_path_factory.mktemp("gunicorn")) as running:
        yield running


@pytest.fixture
def fake(module_fake):
    module_fake.reset()
    return module_fake


@pytest.fixture
def chat(server, tmp_path):
    """Start `piagent chat ARGS` on a terminal of its own (with the key, unless key=None)."""
    terminals: list[Terminal] = []

    def start(*args: str, key: str | None = KEY, url: str | None = None) -> Terminal:
        env = cli_env(tmp_path, PIAGENT_URL=url or server.url)
        if key:
            env["PIAGENT_API_KEY"] = key
        terminal = Terminal([*PIAGENT, "chat", *args], env, tmp_path)
        terminals.append(terminal)
        return terminal

    yield start
    for terminal in terminals:
        terminal.close()


def say(terminal: Terminal, line: str) -> None:
    terminal.type(f"{line}\r")


def test_chat_prints_the_reply_as_it_arrives_and_ctrl_c_stops_it(chat, fake, server):
    fake.behave(tokens=["Use df ", "-h, it lists each disk."], stall_after=1)
    terminal = chat()
    terminal.expect(PROMPT)
    say(terminal, "How do I see free disk space?")

    terminal.expect("Use df ")
    generation = fake.generations[-1]
    assert generation.outcome is None  # the model is still generating this reply

    terminal.type(CTRL_C)
    terminal.expect(r"\(stopped\)")
    assert closed_by_client(fake, server) is generation
    assert generation.tokens_sent == 1
    conversation_id = terminal.expect(CONVERSATION_LINE).group(1)
    terminal.expect(PROMPT)

    # The session goes on, and the server kept what was shown.
    say(terminal, "/history")
    terminal.expect("you: How do I see free disk space?")
    terminal.expect("assistant: Use df ")
    fake.behave(tokens=["Per folder: ", "du -sh *"])
    say(terminal, "And per folder?")
    terminal.expect(r"Per folder: du -sh \*")
    assert fake.last_messages()[1:] == [
        ("user", "How do I see free disk space?"),
        ("assistant", "Use df "),
        ("user", "And per folder?"),
    ]
    terminal.expect(PROMPT)
    terminal.type(CTRL_D)
    assert terminal.wait() == 0
    assert conversation_id in terminal.output


def test_chat_slash_commands(chat, fake, server):
    terminal = chat()
    terminal.expect(PROMPT)
    say(terminal, "/agents")
    listed = terminal.expect(r"(?s)(.*?)general> ").group(1)
    assert re.findall(r"^([ *]) (\w+)$", listed, re.M) == [
        (" ", "coder"),
        ("*", "general"),
        (" ", "shell"),
    ]

    say(terminal, "/agent shell")
    terminal.expect("shell> ")
    say(terminal, "hello")
    terminal.expect("Hello!")
    first = terminal.expect(CONVERSATION_LINE).group(1)
    shell_prompt = (REPO / "prompts" / "shell.md").read_text().strip()
    assert fake.last_messages()[0] == ("system", shell_prompt)

    say(terminal, "/agent nobody")
    terminal.expect("unknown agent 'nobody'; known agents: coder, general, shell")
    say(terminal, "/history")
    terminal.expect("you: hello")
    terminal.expect("assistant: Hello!")

    say(terminal, "/new")
    terminal.expect("a new conversation starts with your next message")
    say(terminal, "again")
    second = terminal.expect(CONVERSATION_LINE).group(1)
    assert second != first
    terminal.expect("shell> ")

    say(terminal, "/list")
    listing = requests.get(f"{server.url}/conversations", headers=AUTH, timeout=5)
    if listing.status_code == 200:
        terminal.expect(rf"\* {second} .* 2 messages  again")
        terminal.expect(rf"  {first} .* 2 messages  hello")
    else:  # a server from before GET /conversations
        assert listing.status_code in (404, 405)
        terminal.expect("this piagent server does not list conversations")

    say(terminal, f"/open {first}")
    terminal.expect(f"conversation {first}: 2 messages")
    say(terminal, "/delete")
    terminal.expect(f"deleted conversation {first}")
    assert (
        requests.get(f"{server.url}/conversations/{first}", headers=AUTH, timeout=5).status_code
        == 404
    )
    say(terminal, f"/open {first}")
    terminal.expect(f"piagent: no conversation '{first}' is remembered")
    say(terminal, "/history")
    terminal.expect("nothing said yet in this conversation")

    say(terminal, "/frobnicate")
    terminal.expect("unknown command /frobnicate: /help lists them")
    say(terminal, "/help")
    for name in ("/agents", "/agent NAME", "/new", "/history", "/list", "/open ID", "/delete"):
        terminal.expect(re.escape(name))
    terminal.expect("shell> ")
    requests_before = len(fake.requests)
    say(terminal, "/bye")
    assert terminal.wait() == 0
    assert len(fake.requests) == requests_before  # commands never reach the model


def test_chat_says_what_went_wrong_in_one_line_and_goes_on(chat, fake, server):
    terminal = chat("--conversation", "busy-one")
    terminal.expect("nothing is remembered under busy-one yet")
    terminal.expect(PROMPT)

    fake.behave(status=503)
    say(terminal, "hi")
    terminal.expect(
        r"piagent: Ollama is busy \(.*\); try again shortly \(Retry-After: \d+ s\)\r?\n"
    )
    terminal.expect(PROMPT)

    fake.behave(status=500, error="llama runner process has terminated")
    say(terminal, "hi")
    terminal.expect("piagent: Ollama answered HTTP 500: llama runner process has terminated\r?\n")
    terminal.expect(PROMPT)

    # Another client is being answered in the same conversation: 409.
    fake.behave(tokens=["a", "b"], stall_after=1)
    other = requests.post(
        f"{server.url}/chat",
        json={"message": "first", "conversation_id": "busy-one", "stream": True},
        headers=AUTH,
        stream=True,
        timeout=10,
    )
    with other:
        fake.wait_for_generation_start(timeout=5)
        say(terminal, "second")
        terminal.expect(
            r"piagent: conversation '\S*busy-one' is still answering an earlier message"
        )
        terminal.expect(PROMPT)
    fake.wait_for_client_close(timeout=5)

    fake.behave(tokens=["fine ", "again"])
    say(terminal, "still there?")
    terminal.expect("fine again")
    terminal.expect(PROMPT)
    terminal.type(CTRL_D)
    assert terminal.wait() == 0


def test_chat_without_the_servers_key_says_how_to_give_it(chat, fake):
    terminal = chat(key=None)
    terminal.expect(PROMPT)
    say(terminal, "hi")
    terminal.expect(
        "piagent: this server needs an API key: send the header Authorization: Bearer <key> "
        r"\(piagent sends the key given with --key or PIAGENT_API_KEY\)"
    )
    terminal.expect(PROMPT)
    terminal.type(CTRL_D)
    assert terminal.wait() == 0
    assert fake.requests == []


def test_chat_ctrl_c_drops_the_typed_line_and_leaves_at_an_empty_prompt(chat, fake, tmp_path):
    terminal = chat()
    terminal.expect(PROMPT)
    say(terminal, "remember this line")
    terminal.expect("Hello!")
    terminal.expect(PROMPT)
    terminal.type("half a thought")
    terminal.expect("half a thought")
    terminal.wait_for_keyboard()
    terminal.type(CTRL_C)
    terminal.expect(PROMPT)  # the line is gone, the session is not
    terminal.wait_for_keyboard()
    terminal.type(CTRL_C)
    assert terminal.wait() == 0
    assert len(fake.generations) == 1

    history = (tmp_path / ".local" / "state" / "piagent" / "history").read_text()
    assert "remember this line" in history
    assert "half a thought" not in history


def test_chat_resumes_a_conversation_given_by_id(chat, fake, server):
    fake.behave(tokens=["Use df -h."])
    first = requests.post(
        f"{server.url}/chat", json={"message": "free disk space?"}, headers=AUTH, timeout=10
    ).json()["conversation_id"]
    terminal = chat("-c", first)
    terminal.expect(f"conversation {first}: 2 messages remembered")
    terminal.expect(PROMPT)
    fake.behave(tokens=["du -sh *"])
    say(terminal, "and per folder?")
    terminal.expect(r"du -sh \*")
    assert fake.last_messages()[1:] == [
        ("user", "free disk space?"),
        ("assistant", "Use df -h."),
        ("user", "and per folder?"),
    ]
    terminal.expect(PROMPT)
    terminal.type(CTRL_D)
    assert terminal.wait() == 0
    assert "(conversation " not in terminal.output  # its id was known from the start


def test_chat_exits_3_when_piagent_cannot_be_reached(chat):
    terminal = chat(url=f"http://127.0.0.1:{free_port()}")
    assert terminal.wait() == 3
    assert re.search(
        r"piagent: cannot reach piagent at http://127\.0\.0\.1:\d+ \(Connection refused\)",
        terminal.output,
    )
