"""The OpenAPI document: Powertools' generation, finished for this API; `docs/openapi.json`.

Powertools derives paths, parameters, bodies and success answers from the
routes' type hints. This module adds what it cannot know:

* the security schemes (`X-API-Key`, bearer) required everywhere except the
  public paths (`security: []` there), so clients and schemathesis send them;
* the roles that may call each authenticated operation, as `x-v2c-roles`
  (from `v2c.handlers.api.roles`), named in its description too;
* the error answers, all with the one `Error` schema of
  `v2c.handlers.api.errors`: 500 and 503 everywhere, 400 where there is
  anything to validate, 401 and 403 on authenticated operations, 404 where the path
  names a resource, 409 on writes, 413/415/422 where there is a request
  body. Powertools' own 422 (`HTTPValidationError`, a shape this API never
  sends) is replaced. A route declares more with
  `openapi_extensions={"x-v2c-errors": [429]}`; an answer the route
  documents itself (`responses=`) is kept as it is.

`python -m v2c.handlers.api.openapi` writes `docs/openapi.json`; a unit test
checks that the committed file equals the generated one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from v2c.handlers.api.auth import API_KEY_HEADER
from v2c.handlers.api.errors import ErrorBody
from v2c.handlers.api.roles import Role, allowed_roles

if TYPE_CHECKING:
    from v2c.handlers.api.app import OtaApi

OPENAPI_PATH: Final = Path(__file__).resolve().parents[4] / "docs" / "openapi.json"
TITLE: Final = "v2c OTA API"
DESCRIPTION: Final = (
    "Fleet-manager API of the v2c OTA service: firmware, campaigns, device updates, "
    "rollbacks, statistics and health. Authenticate with `X-API-Key: <key>` or "
    "`Authorization: Bearer <token>`; each credential carries roles (viewer, fleet_manager, "
    "approver, operator), and each operation lists the roles that may call it in "
    "`x-v2c-roles` (403 otherwise). Every error answer is JSON with a `detail` (for a "
    "person) and a `reason` (a stable word)."
)
ERROR_SCHEMA: Final = "Error"
EXTENSION: Final = "x-v2c-errors"
ROLES_EXTENSION: Final = "x-v2c-roles"
SECURITY_SCHEMES: Final = {
    "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
    "BearerAuth": {"type": "http", "scheme": "bearer"},
}
SECURITY: Final[list[dict[str, list[str]]]] = [{"ApiKeyAuth": []}, {"BearerAuth": []}]
WRITE_METHODS: Final = frozenset({"post", "put", "patch", "delete"})
ERROR_DESCRIPTIONS: Final = {
    400: "Invalid request: a field is missing, malformed or out of range",
    401: "Missing or invalid credentials",
    403: "The credential lacks a role this operation needs",
    404: "No such resource",
    409: "Conflicts with the resource's state",
    413: "Request body too large",
    415: "Unsupported request content type",
    422: "Well-formed, but the content failed a check (e.g. checksum mismatch)",
    429: "Too many requests",
    500: "Internal error (details are logged, never sent)",
    503: "A dependency (database, storage, signing) is unavailable; retry later",
}
_POWERTOOLS_SCHEMAS: Final = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def _error_codes(path: str, method: str, operation: dict[str, Any], public: bool) -> set[int]:
    codes = {500, 503}
    if operation.get("parameters") or "requestBody" in operation:
        codes.add(400)
    if not public:
        codes |= {401, 403}
    if re.search(r"\{[^}]+\}", path):
        codes.add(404)
    if method in WRITE_METHODS:
        codes.add(409)
    if "requestBody" in operation:
        codes |= {413, 415, 422}
    codes |= {int(code) for code in operation.pop(EXTENSION, [])}
    return codes


def _error_response(code: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS.get(code, "Error"),
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
        },
    }


def _finish_operation(path: str, method: str, operation: dict[str, Any], public: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for key in ("422", "500"):  # Powertools' validation answers: not this API's shape
        ref = json.dumps(responses.get(key, {}))
        if any(name in ref for name in _POWERTOOLS_SCHEMAS):
            del responses[key]
    for code in _error_codes(path, method, operation, public):
        responses.setdefault(str(code), _error_response(code))
    operation["responses"] = dict(sorted(responses.items()))
    if public:
        operation["security"] = []
        return
    template = re.sub(r"\{([^}]+)\}", r"<\1>", path)
    roles = sorted(allowed_roles(method, template))
    operation[ROLES_EXTENSION] = roles
    who = "any role" if set(roles) == set(Role) else " or ".join(roles)
    note = f"Roles: {who}."
    text = operation.get("description")
    operation["description"] = f"{text}\n\n{note}" if text else note


def render(app: OtaApi) -> dict[str, Any]:
    """The document for `app`'s routes."""
    generated = app.get_openapi_json_schema(
        title=TITLE, version=app.services.version, description=DESCRIPTION
    )
    document: dict[str, Any] = json.loads(generated)
    document["security"] = SECURITY
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            _finish_operation(path, method, operation, public=path in app.public_paths)
    document["paths"] = dict(sorted(document.get("paths", {}).items()))  # stable, readable
    components = document.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    for name in _POWERTOOLS_SCHEMAS:
        schemas.pop(name, None)
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas[ERROR_SCHEMA] = error_schema
    components["schemas"] = dict(sorted(schemas.items()))
    components["securitySchemes"] = SECURITY_SCHEMES
    return document


def render_text(app: OtaApi) -> str:
    return json.dumps(render(app), indent=2) + "\n"


def default_app() -> OtaApi:
    """Every route, no services: what the committed document describes."""
    from v2c.handlers.api.app import build_app
    from v2c.handlers.api.auth import ApiAuth
    from v2c.handlers.api.services import ApiServices

    return build_app(ApiServices(), ApiAuth())


def main() -> None:
    OPENAPI_PATH.write_text(default_app().openapi_text())
    print(OPENAPI_PATH)


if __name__ == "__main__":
    main()
