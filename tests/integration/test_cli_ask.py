"""`piagent ask` against real gunicorn in front of the fake Ollama: output, pipes, exit codes."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.cli import PIAGENT, cli_env, closed_by_client, run_cli
from tests.servers import REPO, free_port, gunicorn
from tests.terminal import CTRL_C, Terminal

KEY = "ask-test-key-0123456789abcdef"


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
def env(server, tmp_path):
    return cli_env(tmp_path, PIAGENT_URL=server.url, PIAGENT_API_KEY=KEY)


def ask(env, tmp_path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(["ask", *args], env, tmp_path, stdin=stdin)


def test_ask_from_a_terminal_streams_the_reply_and_ctrl_c_stops_it(env, tmp_path, fake, server):
    fake.behave(tokens=["Use df -h", " and more"], stall_after=1)
    with Terminal([*PIAGENT, "ask", "How", "do I see free disk space?"], env, tmp_path) as terminal:
        terminal.expect("Use df -h")
        generation = fake.generations[-1]
        assert generation.outcome is None  # printed while the model still generates
        # A terminal's stdin is not read: the question alone was sent.
        assert fake.last_messages()[-1] == ("user", "How do I see free disk space?")
        terminal.type(CTRL_C)
        assert terminal.wait() == 130
        assert closed_by_client(fake, server) is generation


def test_ask_from_a_terminal_names_the_conversation_on_stderr(env, tmp_path, fake):
    with Terminal([*PIAGENT, "ask", "hi"], env, tmp_path) as terminal:
        assert terminal.wait() == 0
    reply, conversation = terminal.output.splitlines()
    assert reply == "Hello!"
    assert conversation.startswith("(conversation ")
    assert conversation.endswith(": --conversation continues it)")


def test_ask_prints_only_the_reply_and_adds_piped_text_after_the_question(env, tmp_path, fake):
    fake.behave(tokens=["nginx cannot ", "bind port 80."])
    log = "Jun 01 bind() to 0.0.0.0:80 failed (98: Address already in use)\nJun 01 exited\n"
    result = ask(env, tmp_path, "why does this fail?", stdin=log)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "nginx cannot bind port 80.\n"
    assert result.stderr == ""
    assert fake.last_messages()[-1] == ("user", f"why does this fail?\n\n{log.rstrip()}")
    assert fake.generations[-1].stream  # streamed, not waited for


def test_ask_takes_the_message_from_the_pipe_alone(env, tmp_path, fake):
    result = ask(env, tmp_path, stdin="What is a Raspberry Pi?\n")
    assert result.returncode == 0, result.stderr
    assert fake.last_messages()[-1] == ("user", "What is a Raspberry Pi?")


def test_ask_json_prints_the_whole_reply_and_continues_a_conversation(env, tmp_path, fake):
    fake.behave(tokens=["Use ", "df -h."])
    first = ask(env, tmp_path, "--json", "free disk space?")
    assert first.returncode == 0, first.stderr
    reply = json.loads(first.stdout)
    assert reply["reply"] == "Use df -h."
    assert reply["model"] == "qwen2.5:3b-instruct"
    assert not fake.generations[-1].stream

    fake.behave(tokens=["du -sh *"])
    second = ask(env, tmp_path, "--conversation", reply["conversation_id"], "and per folder?")
    assert second.stdout == "du -sh *\n"
    assert fake.last_messages()[1:] == [
        ("user", "free disk space?"),
        ("assistant", "Use df -h."),
        ("user", "and per folder?"),
    ]


def test_ask_uses_the_agent_given(env, tmp_path, fake):
    result = ask(env, tmp_path, "--agent", "shell", "list files")
    assert result.returncode == 0, result.stderr
    assert fake.last_messages()[0] == (
        "system",
        (REPO / "prompts" / "shell.md").read_text().strip(),
    )


def test_ask_refuses_a_message_over_4000_characters_before_sending(env, tmp_path, fake):
    question = "explain:"
    piped = "x" * (4000 - len(question) - 2 + 37)
    result = ask(env, tmp_path, question, stdin=piped)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "piagent: the question and the piped text are 4037 characters, 37 over piagent's "
        "limit of 4000; nothing was sent: shorten the question or pipe in less "
        "(e.g. tail -n 50)\n"
    )
    assert fake.requests == []

    at_the_limit = ask(env, tmp_path, question, stdin=piped[:-37])
    assert at_the_limit.returncode == 0, at_the_limit.stderr
    assert len(fake.last_messages()[-1][1]) == 4000


def test_ask_exit_codes(env, tmp_path, fake):
    # 1: the server said no, in its own words, one line on stderr.
    unknown = ask(env, tmp_path, "--agent", "poet", "hi")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == "piagent: unknown agent 'poet'; known agents: coder, general, shell\n"

    fake.behave(status=503)
    busy = ask(env, tmp_path, "hi")
    assert busy.returncode == 1
    assert busy.stderr.startswith("piagent: Ollama is busy")
    assert busy.stderr.endswith("(Retry-After: 5 s)\n")

    no_key = ask({**env, "PIAGENT_API_KEY": ""}, tmp_path, "hi")
    assert no_key.returncode == 1
    assert "needs an API key" in no_key.stderr
    assert "--key or PIAGENT_API_KEY" in no_key.stderr
    fake.behave()
    with_option = ask({**env, "PIAGENT_API_KEY": ""}, tmp_path, "--key", KEY, "hi")
    assert (with_option.returncode, with_option.stdout) == (0, "Hello!\n")

    # 1 as well when the model fails after the reply started: the text so far, then why.
    fake.behave(tokens=["par", "tial"], error_after=1)
    broken = ask(env, tmp_path, "hi")
    assert (broken.returncode, broken.stdout) == (1, "par")
    assert broken.stderr.startswith("piagent: ")
    assert "unexpected EOF" in broken.stderr

    # 2: usage.
    nothing = ask(env, tmp_path)
    assert nothing.returncode == 2
    assert nothing.stderr == "piagent: nothing to ask: give a question, or pipe text in\n"
    assert ask(env, tmp_path, "--no-such-option", "hi").returncode == 2

    # 3: nobody answers at the URL.
    down = ask({**env, "PIAGENT_URL": f"http://127.0.0.1:{free_port()}"}, tmp_path, "hi")
    assert down.returncode == 3
    assert "piagent: cannot reach piagent at http://127.0.0.1:" in down.stderr
    assert "(Connection refused)" in down.stderr


def test_ask_stops_the_reply_when_its_reader_leaves(env, tmp_path, fake):
    fake.behave(tokens=["first ", "second ", "third"], token_delay=0.2)
    process = subprocess.Popen(
        [*PIAGENT, "ask", "count"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with process:
        assert process.stdout.read(len("first ")) == b"first "
        process.stdout.close()  # like `| head -c 6` leaving
        generation = fake.wait_for_client_close(timeout=5)
        assert generation.tokens_sent < 3
        assert process.wait(timeout=10) == 0
        assert process.stderr.read() == b""
