"""GET /agents and GET /agents/<name>: the list stays names, the details come from the agent."""

from __future__ import annotations

from piagent.app import create_app
from tests.conftest import MODEL


def test_agents_is_still_a_list_of_names(client):
    assert client.get("/agents").get_json() == {"agents": ["coder", "general", "shell"]}


def test_agent_details_with_the_server_defaults(make_settings):
    client = create_app(make_settings(temperature=0.4, max_tokens=99)).test_client()
    details = client.get("/agents/shell").get_json()
    assert details["name"] == "shell"
    assert details["description"].startswith("Linux and shell commands")
    assert (details["provider"], details["model"]) == ("ollama", MODEL)
    assert (details["temperature"], details["max_tokens"]) == (0.4, 99)
    assert details["system_prompt"].startswith("You are a terse Linux and shell helper")


def test_agent_details_show_its_own_settings(make_settings, fake, tmp_path):
    (tmp_path / "general.md").write_text("Be brief.")
    (tmp_path / "poet.md").write_text("Answer in verse.")
    (tmp_path / "poet.toml").write_text('model = "verse:1b"\ntemperature = 1.2\nmax_tokens = 40\n')
    client = create_app(make_settings(prompts_dir=tmp_path)).test_client()
    details = client.get("/agents/poet").get_json()
    assert (details["model"], details["temperature"], details["max_tokens"]) == (
        "verse:1b",
        1.2,
        40,
    )
    assert details["description"] is None
    assert fake.requests == []


def test_unknown_agent_details_are_404_naming_the_known_ones(client):
    response = client.get("/agents/pirate")
    assert response.status_code == 404
    detail = response.get_json()["detail"]
    assert "pirate" in detail and "coder, general, shell" in detail
