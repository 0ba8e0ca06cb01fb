"""`piagent doctor` on a healthy set-up and on each broken one: every failure names its fix.

Real parts throughout: gunicorn with the fake Ollama, a real redis-server, a real nginx
(whose configuration doctor tests with `nginx -t`), files the current user cannot write.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli import cli_env, run_cli
from tests.components import require_program
from tests.conftest import MODEL
from tests.fake_openai import FakeOpenAI
from tests.nginx import default_buffering_site, nginx, shipped_site
from tests.servers import free_port, gunicorn

# What every nginx check here expects from piagent's defaults: queue 30 s + first token 120 s.
NEEDED_S = 150


@pytest.fixture(scope="module")
def piagent(module_fake, tmp_path_factory):
    env = {"OLLAMA_HOST": module_fake.url, "ACCESS_LOG": ""}
    with gunicorn(env, tmp_path_factory.mktemp("gunicorn")) as running:
        yield running


@pytest.fixture
def doctor(piagent, module_fake, tmp_path):
    """Run `piagent doctor` with an env file of these settings (the fake Ollama unless given)."""

    def run(
        settings: dict[str, str] | None = None,
        *,
        url: str | None = None,
        nginx_conf: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env_file = tmp_path / "piagent.env"
        lines = {"OLLAMA_HOST": module_fake.url, **(settings or {})}
        env_file.write_text("".join(f"{name}={value}\n" for name, value in lines.items()))
        env = cli_env(
            tmp_path,
            # No nginx unless the test brings one: never the machine's own configuration.
            PIAGENT_NGINX_CONF=str(nginx_conf or tmp_path / "no-nginx.conf"),
            **(extra_env or {}),
        )
        args = ["doctor", "--env-file", str(env_file), "--url", url or piagent.url]
        return run_cli(args, env, tmp_path)

    return run


@pytest.fixture
def nginx_root(tmp_path) -> Path:
    """A folder for a real nginx: its configuration, pid, logs and temporary files."""
    root = tmp_path / "nginx"
    root.mkdir()
    return root


def failures(output: str) -> list[tuple[str, str]]:
    """(what failed, its fix) for each ✘ line of the report."""
    lines = output.splitlines()
    found = []
    for index, line in enumerate(lines):
        if line.startswith("✘ "):
            fix = lines[index + 1]
            assert fix.startswith("    fix: "), f"a failure without its fix: {line}"
            found.append((line[2:], fix.removeprefix("    fix: ")))
    return found


def only_failure(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert result.returncode == 1, result.stdout + result.stderr
    found = failures(result.stdout)
    assert len(found) == 1, result.stdout
    assert result.stdout.endswith("1 check failed\n")
    return found[0]


def test_doctor_passes_a_healthy_deployment(module_fake, doctor, tmp_path, nginx_root):
    memory = tmp_path / "state" / "memory.sqlite3"
    settings = {"MEMORY_BACKEND": "sqlite", "MEMORY_PATH": str(memory)}
    server_env = {"OLLAMA_HOST": module_fake.url, "ACCESS_LOG": "", **settings}
    with gunicorn(server_env, tmp_path) as server:
        upstream = server.url.removeprefix("http://")
        site = shipped_site(upstream, free_port())
        with nginx(site, nginx_root) as proxy:
            result = doctor(settings, url=proxy.url, nginx_conf=nginx_root / "nginx.conf")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "no problems found"
    assert all(line.startswith("✔ ") for line in lines[:-2]), result.stdout
    assert lines[-2].startswith("– systemd: ")  # a container, or a machine without the unit
    for expected in (
        "✔ settings load from ",
        "✔ agents: coder, general, shell",
        f"✔ model server: Ollama 0.12.0 answers at {module_fake.url}",
        f"✔ model {MODEL} is available (agents coder, general, shell)",
        "✔ context: each agent's prompt and reply fit CTX_TOKENS",
        f"✔ memory: SQLite file {memory} is writable",
        f"✔ piagent answers at {proxy.url}: /health in ",
        "✔ nginx -t passes",
        "passes streams on unbuffered (proxy_buffering off)",
        f"waits 180s for piagent (proxy_read_timeout), longer than QUEUE_TIMEOUT_S + "
        f"FIRST_TOKEN_TIMEOUT_S ({NEEDED_S} s)",
    ):
        assert expected in result.stdout


def test_doctor_model_server_down(doctor):
    down = f"http://127.0.0.1:{free_port()}"
    text, fix = only_failure(doctor({"OLLAMA_HOST": down}))
    assert text == f"model server: Ollama is not reachable at {down}: is it running? (OLLAMA_HOST)"
    assert fix == (
        "start Ollama (sudo systemctl start ollama, or `ollama serve`), or set OLLAMA_HOST to "
        "the address it listens on"
    )


def test_doctor_never_shows_the_credentials_in_a_url(doctor, module_fake):
    def hidden(result: subprocess.CompletedProcess[str]) -> str:
        output = result.stdout + result.stderr
        assert "s3cret" not in output and "pi-user" not in output, output
        return output

    down = f"http://127.0.0.1:{free_port()}"
    output = hidden(doctor({"OLLAMA_HOST": down.replace("://", "://pi-user:s3cret@")}))
    assert f"Ollama is not reachable at {down}:" in output
    up = module_fake.url
    output = hidden(doctor({"OLLAMA_HOST": up.replace("://", "://pi-user:s3cret@")}))
    assert f"answers at {up}" in output
    with FakeOpenAI() as server:
        settings = {
            "PROVIDER": "openai",
            "OPENAI_BASE_URL": server.base_url.replace("://", "://pi-user:s3cret@"),
            "OPENAI_MODEL": "absent",
        }
        output = hidden(doctor(settings))
    assert f"model absent is not served at {server.base_url}" in output
    output = hidden(doctor({"OLLAMA_HOST": "ftp://pi-user:s3cret@127.0.0.1:11434"}))
    assert "OLLAMA_HOST='ftp://127.0.0.1:11434' is invalid" in output


def test_doctor_model_missing(doctor):
    text, fix = only_failure(doctor({"OLLAMA_MODEL_GENERAL": "llama3.2:1b"}))
    assert text == "model llama3.2:1b is not pulled (agents coder, general, shell)"
    assert fix == "ollama pull llama3.2:1b"


def test_doctor_prompt_too_long_for_the_context(doctor, tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "general.md").write_text("You are helpful.")
    (prompts / "essay.md").write_text("Write in the manner of a long essay. " * 200)
    text, fix = only_failure(doctor({"PROMPTS_DIR": str(prompts)}))
    assert text.startswith("agents: agent 'essay' does not fit CTX_TOKENS=2048: ")
    assert "raise CTX_TOKENS to at least " in text and "shorten its prompt" in text
    assert f"the prompt files are in {prompts} (PROMPTS_DIR)" in fix


def test_doctor_redis_down_and_up(doctor, redis_url):
    down = f"redis://:secret@127.0.0.1:{free_port()}/0"
    text, fix = only_failure(doctor({"MEMORY_BACKEND": "redis", "REDIS_URL": down}))
    assert text.startswith("memory: the conversation memory at redis://127.0.0.1:")
    assert "secret" not in text
    assert fix.startswith("start Redis (sudo systemctl start redis-server) or correct REDIS_URL")

    up = doctor({"MEMORY_BACKEND": "redis", "REDIS_URL": redis_url})
    assert up.returncode == 0, up.stdout
    assert "✔ memory: Redis answers PING (MEMORY_BACKEND=redis)" in up.stdout


def test_doctor_sqlite_path_not_writable(doctor, tmp_path):
    # /proc refuses new files to everyone, root included (who may write anywhere else).
    text, fix = only_failure(
        doctor({"MEMORY_BACKEND": "sqlite", "MEMORY_PATH": "/proc/piagent/memory.sqlite3"})
    )
    assert text.startswith("memory: ")
    assert "cannot create files in /proc" in text
    assert "set MEMORY_PATH to a writable place" in fix

    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("my notes")
    text, fix = only_failure(
        doctor({"MEMORY_BACKEND": "sqlite", "MEMORY_PATH": str(not_a_database)})
    )
    assert text == f"memory: MEMORY_PATH {not_a_database} is not a SQLite database"
    assert fix.startswith(f"move {not_a_database} aside")
    assert not_a_database.read_text() == "my notes"


def test_doctor_piagent_not_running(doctor):
    url = f"http://127.0.0.1:{free_port()}"
    text, fix = only_failure(doctor(url=url))
    assert text == f"piagent: cannot reach piagent at {url} (Connection refused)"
    assert fix.startswith("start it (sudo systemctl start piagent, or make run)")


def test_doctor_piagent_running_but_not_ready(doctor, module_fake, tmp_path):
    # This piagent was started with settings other than the env file's: a model not pulled.
    env = {"OLLAMA_HOST": module_fake.url, "ACCESS_LOG": "", "OLLAMA_MODEL_GENERAL": "phi3:mini"}
    with gunicorn(env, tmp_path) as server:
        text, fix = only_failure(doctor(url=server.url))
    assert text.startswith(f"piagent at {server.url} is not ready (/ready in ")
    assert fix == "model phi3:mini is not pulled: run ollama pull phi3:mini"


def test_doctor_nginx_site_buffering_and_short_read_timeout(doctor, piagent, nginx_root):
    upstream = piagent.url.removeprefix("http://")
    site = f"""
upstream piagent {{
    server {upstream};
}}
server {{
    listen 127.0.0.1:{free_port()};
    proxy_read_timeout 30s;
    location / {{
        proxy_pass http://piagent;
        proxy_buffering on;
        proxy_ignore_headers X-Accel-Buffering;
    }}
}}
"""
    with nginx(site, nginx_root):
        result = doctor(nginx_conf=nginx_root / "nginx.conf")
    assert result.returncode == 1
    assert "✔ nginx -t passes" in result.stdout
    where = f"{nginx_root / 'site.conf'}:{site.splitlines().index('    location / {') + 1}"
    (buffering, buffering_fix), (timeout, timeout_fix) = failures(result.stdout)
    assert buffering.startswith(f"nginx buffers piagent's streams at {where} (location /)")
    assert buffering_fix.startswith("add `proxy_buffering off;` to that block")
    assert timeout.startswith(f"nginx: proxy_read_timeout 30s at {where} (location /)")
    assert f"({NEEDED_S} s)" in timeout
    assert timeout_fix.startswith(f"set `proxy_read_timeout {NEEDED_S + 30}s;` in that block")


def test_doctor_finds_a_site_by_gunicorns_bind_and_knows_nginx_defaults(
    doctor, piagent, nginx_root
):
    upstream = piagent.url.removeprefix("http://")
    with nginx(default_buffering_site(upstream, free_port()), nginx_root):
        result = doctor(nginx_conf=nginx_root / "nginx.conf", extra_env={"BIND": upstream})
    # Buffering is left on, but piagent's X-Accel-Buffering: no turns it off per stream;
    # nginx's default proxy_read_timeout (60 s) is too short.
    assert (
        "passes streams on unbuffered (buffering is on, but piagent's X-Accel-Buffering: no "
        "turns it off for them)"
    ) in result.stdout
    text, fix = only_failure(result)
    assert text.startswith("nginx: proxy_read_timeout 60s at ")
    assert fix.startswith(f"set `proxy_read_timeout {NEEDED_S + 30}s;`")


def test_doctor_nginx_configuration_that_fails_its_test(doctor, tmp_path):
    require_program("nginx", "/usr/sbin/nginx")
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\nhttp {\n    proxy_bufering off;\n}\n"
    )
    text, fix = only_failure(doctor(nginx_conf=conf))
    assert text == f'nginx -t fails: unknown directive "proxy_bufering" in {conf}:5'
    assert fix == "correct the line it names, then sudo nginx -t && sudo systemctl reload nginx"


def test_doctor_settings_that_do_not_load(doctor):
    result = doctor({"MEMORY_MAX_TURNS": "lots"})
    text, fix = only_failure(result)
    assert text.startswith("settings from ")
    assert "MEMORY_MAX_TURNS='lots' is invalid" in text
    assert fix.startswith("correct that variable in ")
    assert "– agents, model server, memory: not checked until the settings load" in result.stdout


def test_doctor_with_an_openai_compatible_server(doctor):
    with FakeOpenAI(models=["smollm2"]) as server:
        settings = {
            "PROVIDER": "openai",
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_MODEL": "smollm2",
        }
        healthy = doctor(settings)
        assert healthy.returncode == 0, healthy.stdout
        assert (
            f"✔ model server: the OpenAI-compatible server answers at {server.base_url}"
            in healthy.stdout
        )
        assert "✔ model smollm2 is available (agents coder, general, shell)" in healthy.stdout

        text, fix = only_failure(doctor({**settings, "OPENAI_MODEL": "qwen2.5-3b"}))
        assert text == (
            f"model qwen2.5-3b is not served at {server.base_url} (agents coder, general, "
            "shell); it serves: smollm2"
        )
        assert fix.startswith("load qwen2.5-3b in that server, or set OPENAI_MODEL")
