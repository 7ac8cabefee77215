"""docs/openapi.json is current, served as generated, and describes auth and errors completely."""

from __future__ import annotations

import json
from typing import Any

from api_events import call, make_app

from v2c.handlers.api import OtaApi
from v2c.handlers.api.openapi import OPENAPI_PATH, default_app, render, render_text


def test_committed_document_is_current() -> None:
    assert OPENAPI_PATH.read_text() == default_app().openapi_text(), (
        "docs/openapi.json drifted from the routes: "
        "run `python -m v2c.handlers.api.openapi` and commit the result"
    )


def test_the_served_document_is_the_generated_one() -> None:
    app = make_app()
    status, _, body = call(app, "GET", "/api/v1/openapi.json")
    assert status == 200
    assert body == json.loads(render_text(app))


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, item in document["paths"].items() for m, op in item.items()]


def test_title_version_and_security_schemes() -> None:
    document = json.loads(OPENAPI_PATH.read_text())
    assert document["info"]["title"] == "v2c OTA API"
    assert document["info"]["version"] == default_app().services.version
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["BearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert document["security"] == [{"ApiKeyAuth": []}, {"BearerAuth": []}]


def test_every_error_answer_uses_the_error_schema_and_public_paths_need_no_auth() -> None:
    document = json.loads(OPENAPI_PATH.read_text())
    text = json.dumps(document)
    assert "HTTPValidationError" not in text
    assert "ResponseValidationError" not in text
    assert document["components"]["schemas"]["Error"]["required"] == ["detail", "reason"]
    for path, _, operation in _operations(document):
        public = path == "/health"
        assert ("security" in operation and operation["security"] == []) == public
        assert ("401" in operation["responses"]) != public
        for code, answer in operation["responses"].items():
            if int(code) >= 400 and path != "/health/detailed":
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, code)


def _extra(app: OtaApi) -> None:
    @app.post("/api/v1/test/things/<thing_id>", openapi_extensions={"x-v2c-errors": [429]})
    def post_thing(thing_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return body


def test_error_codes_follow_the_operation_and_extensions_add_more() -> None:
    operation = render(make_app(extra=_extra))["paths"]["/api/v1/test/things/{thing_id}"]["post"]
    assert sorted(operation["responses"]) == [
        "200", "400", "401", "403", "404", "409", "413", "415", "422", "429", "500", "503"
    ]  # fmt: skip
    assert "x-v2c-errors" not in operation
    assert operation["x-v2c-roles"] == ["fleet_manager"]


def test_every_operation_names_the_roles_of_the_documented_table() -> None:
    """The role table of `v2c.handlers.api.roles` (and README), as the document states it."""
    document = json.loads(OPENAPI_PATH.read_text())
    every = ["approver", "fleet_manager", "operator", "viewer"]
    seen: dict[str, list[str]] = {}
    for path, method, operation in _operations(document):
        if operation.get("security") == []:
            assert "x-v2c-roles" not in operation, path  # public
            continue
        roles = operation["x-v2c-roles"]
        seen[f"{method.upper()} {path}"] = roles
        if path in (
            "/api/v1/ota/campaigns/{campaign_id}/approve",
            "/api/v1/ota/campaigns/{campaign_id}/reject",
        ):
            assert roles == ["approver"]
        elif path.startswith("/api/v1/dlq/"):
            assert roles == ["operator"], path
        elif method == "get":
            assert roles == every, path
        else:
            assert roles == ["fleet_manager"], path
        assert "403" in operation["responses"], path
    assert seen["POST /api/v1/dlq/{queue}/replay"] == ["operator"]
    assert seen["POST /api/v1/ota/firmware"] == ["fleet_manager"]
