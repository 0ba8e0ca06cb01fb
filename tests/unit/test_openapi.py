"""The OpenAPI document: valid 3.1, one operation per route, written from the models."""

from __future__ import annotations

import re

import pytest
from flask import Blueprint, Flask
from openapi_spec_validator import validate

from piagent.app import create_app
from piagent.docs.apidoc import exclusion_of, operation_of
from piagent.docs.openapi import openapi_path
from piagent.errors import MessageTooLong, UpstreamRejected
from piagent.settings import PROJECT_ROOT, Settings

KEY = "unit-test-key-0123456789"


def build(**settings) -> Flask:
    return create_app(Settings(**settings))


def document_of(app: Flask) -> dict:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def unaccounted_routes(app: Flask, document: dict) -> list[str]:
    """Routes neither in the document with a modelled reply nor left out with a reason."""
    missing = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if exclusion_of(view):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found = document["paths"].get(openapi_path(rule), {}).get(method.lower())
            if found is None or operation_of(view) is None:
                missing.append(f"{method} {rule.rule}")
                continue
            success = [r for status, r in found["responses"].items() if status.startswith("2")]
            if not any("content" in r for r in success) and "204" not in found["responses"]:
                missing.append(f"{method} {rule.rule} (no modelled reply)")
    return missing


@pytest.mark.parametrize("keys", [False, True], ids=["keys off", "keys on"])
def test_the_document_is_valid_openapi_3_1(keys):
    document = document_of(build(api_keys=KEY if keys else ""))
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_is_documented_or_left_out_with_a_reason():
    app = build()
    assert unaccounted_routes(app, document_of(app)) == []
    documented = {
        f"{method.upper()} {path}"
        for path, item in document_of(app)["paths"].items()
        for method in item
    }
    assert documented == {
        "GET /health",
        "GET /ready",
        "GET /agents",
        "GET /agents/{name}",
        "POST /chat",
        "GET /conversations",
        "GET /conversations/{conversation_id}",
        "DELETE /conversations/{conversation_id}",
        "GET /metrics",
        "GET /v1/models",
        "GET /v1/models/{name}",
        "POST /v1/chat/completions",
    }


def test_a_route_added_without_a_model_is_caught():
    app = build()
    extra = Blueprint("extra", __name__)

    @extra.get("/extra/<item>")
    def item(item: str) -> dict[str, str]:
        return {"item": item}

    app.register_blueprint(extra)
    assert unaccounted_routes(app, document_of(app)) == ["GET /extra/<item>"]


def test_left_out_routes_are_the_pages_for_browsers_and_the_document_itself():
    app = build()
    left_out = {
        rule.rule: exclusion_of(app.view_functions[rule.endpoint])
        for rule in app.url_map.iter_rules()
        if exclusion_of(app.view_functions[rule.endpoint])
    }
    assert set(left_out) == {
        "/",
        "/static/<path:filename>",
        "/openapi.json",
        "/docs",
        "/docs/static/<path:filename>",
    }


def test_request_bodies_carry_their_limits():
    schemas = document_of(build())["components"]["schemas"]
    message = schemas["ChatRequest"]["properties"]["message"]
    assert (message["minLength"], message["maxLength"]) == (1, 4000)
    conversation_id = schemas["ChatRequest"]["properties"]["conversation_id"]
    assert "^[A-Za-z0-9._:-]{1,128}$" in str(conversation_id)
    assert schemas["CompletionRequest"]["properties"]["temperature"]["anyOf"][0] == {
        "maximum": 2.0,
        "minimum": 0.0,
        "type": "number",
    }


def test_chat_documents_its_statuses_streams_and_headers():
    chat = document_of(build())["paths"]["/chat"]["post"]
    responses = chat["responses"]
    assert set(responses) == {"200", "400", "404", "409", "413", "422", "502", "503", "504"}
    assert set(responses["200"]["content"]) == {
        "application/json",
        "text/plain",
        "text/event-stream",
        "application/x-ndjson",
    }
    event = responses["200"]["content"]["text/event-stream"]["schema"]["properties"]["data"]
    assert event["contentSchema"] == {"$ref": "#/components/schemas/StreamEvent"}
    assert set(responses["200"]["headers"]) == {"X-Conversation-Id", "X-Request-Id"}
    # Only the model server being busy says when to come back, and not every 503 is that.
    assert "Retry-After" in responses["503"]["headers"]
    headers = {p["name"] for p in chat["parameters"] if p.get("in") == "header"}
    assert headers == {"X-Conversation-Id", "X-New-Conversation-Id"}
    assert {"$ref": "#/components/parameters/RequestId"} in chat["parameters"]
    assert responses["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorReply"
    }


def test_optional_headers_are_described_and_left_out_rather_than_null():
    chat = document_of(build())["paths"]["/chat"]["post"]
    headers = {p["name"]: p for p in chat["parameters"] if p.get("in") == "header"}
    for name in ("X-Conversation-Id", "X-New-Conversation-Id"):
        assert headers[name]["required"] is False
        assert headers[name]["description"]
        assert headers[name]["schema"] == {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}


def test_v1_errors_are_documented_in_openai_shape():
    paths = document_of(build())["paths"]
    for item in (paths["/v1/models/{name}"]["get"], paths["/v1/chat/completions"]["post"]):
        schema = item["responses"]["404"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/OpenAIErrorReply"}
    stream = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    data = stream["text/event-stream"]["schema"]["properties"]["data"]
    assert {"const": "[DONE]"} in data["anyOf"]


def test_v1_documents_a_message_too_long_as_openai_does_with_400():
    completions = document_of(build())["paths"]["/v1/chat/completions"]["post"]["responses"]
    why_400 = completions["400"]["description"]
    assert MessageTooLong.__doc__.splitlines()[0] in why_400
    assert UpstreamRejected.__doc__.splitlines()[0] in why_400
    # On /v1, 422 is only the body breaking a rule.
    assert MessageTooLong.__doc__.splitlines()[0] not in completions["422"]["description"]


def test_with_api_keys_every_route_but_the_public_ones_needs_a_bearer_key():
    document = document_of(build(api_keys=KEY))
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "One of the keys in API_KEYS or API_KEYS_FILE.",
    }
    for path, item in document["paths"].items():
        for method, found in item.items():
            public = path in ("/health", "/ready")
            assert found["security"] == ([] if public else [{"apiKey": []}]), (method, path)
            assert ("401" in found["responses"]) is not public, (method, path)
    unauthorized = document["paths"]["/agents"]["get"]["responses"]["401"]
    assert "WWW-Authenticate" in unauthorized["headers"]


def test_without_api_keys_nothing_asks_for_one():
    document = document_of(build())
    assert "securitySchemes" not in document["components"]
    for item in document["paths"].values():
        for found in item.values():
            assert "security" not in found and "401" not in found["responses"]


def test_the_document_and_its_page_are_public_under_api_keys():
    client = build(api_keys=KEY).test_client()
    assert client.get("/agents").status_code == 401
    for url in ("/openapi.json", "/docs", "/docs/static/docs.js"):
        assert client.get(url).status_code == 200, url


def test_docs_false_turns_the_document_and_its_page_off():
    client = build(docs=False).test_client()
    for url in ("/openapi.json", "/docs", "/docs/static/docs.js"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.get_json() == {"detail": f"no such route: {url}"}


def test_the_page_loads_only_files_this_server_serves():
    client = build().test_client()
    page = client.get("/docs")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all("//" not in url and not url.startswith("/") for url in urls), urls
    for url in urls:
        assert client.get("/" + url).status_code == 200, url


def test_the_readme_links_the_docs_page():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert re.search(r"\]\(http://127\.0\.0\.1:8000/docs\)", readme)
    assert "/openapi.json" in readme
