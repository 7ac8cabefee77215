"""API authentication and roles: a credential before anything else (401), then the
route's role (403), both with a JSON detail."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from api_events import API_KEY, AUTH, PRINCIPAL, TOKEN, call, make_app
from pydantic import BaseModel

from v2c.contract.errors import ConfigurationError
from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
from v2c.handlers.api.auth import Credential, parse_credentials
from v2c.handlers.api.roles import Role, allowed_roles
from v2c.handlers.api.routes import health


class Thing(BaseModel):
    name: str


def _routes(app: OtaApi) -> None:
    @app.post("/api/v1/test/things", status_code=201)
    def create(thing: Thing) -> dict[str, Any]:
        return {"name": thing.name, "by": app.context["principal"].id}

    @app.get("/api/v1/test/whoami")
    def whoami() -> dict[str, Any]:
        principal = app.context["principal"]
        return {"id": principal.id, "method": principal.method}

    @app.post("/api/v1/dlq/<queue>/replay")
    def replay(queue: str) -> dict[str, Any]:
        return {"queue": queue}


@pytest.fixture
def app() -> OtaApi:
    return make_app(extra=_routes)


def test_no_credentials_is_401_with_a_bearer_challenge_and_a_json_detail(app: OtaApi) -> None:
    status, headers, body = call(app, "GET", "/api/v1/test/whoami")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="v2c"'
    assert headers["content-type"] == "application/json"
    assert body["reason"] == "missing_credentials"
    assert "X-API-Key" in body["detail"]


def test_a_wrong_key_is_401_invalid_token(app: OtaApi) -> None:
    status, headers, body = call(app, "GET", "/api/v1/test/whoami", headers={"X-API-Key": "nope"})
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert body == {"detail": "invalid credentials", "reason": "invalid_credentials"}


def test_an_api_key_is_accepted_under_any_header_case(app: OtaApi) -> None:
    status, _, body = call(app, "GET", "/api/v1/test/whoami", headers={"x-api-key": API_KEY})
    assert status == 200
    assert body["method"] == "api_key"
    # the principal is the name configured with the credential, never the secret
    assert body["id"] == PRINCIPAL
    assert API_KEY not in body["id"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_a_bearer_token_is_accepted(app: OtaApi, scheme: str) -> None:
    headers = {"Authorization": f"{scheme} {TOKEN}"}
    status, _, body = call(app, "GET", "/api/v1/test/whoami", headers=headers)
    assert status == 200
    assert body["method"] == "bearer"


def test_a_key_is_not_a_token_nor_basic_auth_a_bearer(app: OtaApi) -> None:
    for headers in ({"Authorization": f"Bearer {API_KEY}"}, {"Authorization": f"Basic {TOKEN}"}):
        assert call(app, "GET", "/api/v1/test/whoami", headers=headers)[0] == 401


def test_one_bad_credential_refuses_the_request_whatever_else_is_sent(app: OtaApi) -> None:
    both_good = {**AUTH, "Authorization": f"Bearer {TOKEN}"}
    status, _, body = call(app, "GET", "/api/v1/test/whoami", headers=both_good)
    assert (status, body["method"]) == (200, "api_key")
    for headers in (
        {**AUTH, "Authorization": "Bearer forged"},
        {"X-API-Key": "forged", "Authorization": f"Bearer {TOKEN}"},
    ):
        status, _, body = call(app, "GET", "/api/v1/test/whoami", headers=headers)
        assert (status, body["reason"]) == (401, "invalid_credentials")


def test_authentication_comes_before_routing_and_validation(app: OtaApi) -> None:
    # Given no credentials, an unknown path and a body failing validation
    # answer 401 like any other: an anonymous caller learns nothing about routes.
    assert call(app, "GET", "/api/v1/test/no-such-thing")[0] == 401
    assert call(app, "POST", "/api/v1/test/things", body={"wrong": 1})[0] == 401
    # With a key, the same requests reach routing and validation.
    assert call(app, "GET", "/api/v1/test/no-such-thing", headers=AUTH)[0] == 404
    assert call(app, "POST", "/api/v1/test/things", body={"wrong": 1}, headers=AUTH)[0] == 400


def test_routes_see_the_principal(app: OtaApi) -> None:
    status, _, body = call(app, "POST", "/api/v1/test/things", body={"name": "a"}, headers=AUTH)
    assert status == 201
    assert body["by"] == PRINCIPAL


def test_health_and_the_openapi_document_are_public_detailed_health_is_not(app: OtaApi) -> None:
    assert call(app, "GET", "/health")[0] == 200
    assert call(app, "GET", "/api/v1/openapi.json")[0] == 200
    assert call(app, "GET", "/health/detailed")[0] == 401
    assert call(app, "GET", "/health/detailed", headers=AUTH)[0] == 200


def test_a_sha256_entry_accepts_the_key_it_hashes() -> None:
    digest = hashlib.sha256(b"s3cret").hexdigest()
    app = build_app(ApiServices(), ApiAuth([f"ops:viewer:sha256:{digest}"]), modules=[health])
    assert call(app, "GET", "/health/detailed", headers={"X-API-Key": "s3cret"})[0] == 200
    assert call(app, "GET", "/health/detailed", headers={"X-API-Key": digest})[0] == 401


@pytest.mark.parametrize(
    "entry",
    [
        "ops:viewer:sha256:abc",  # not 64 hex digits
        "s3cret",  # a bare secret names nobody
        "sha256:" + "a" * 64,  # nor does a bare digest
        "ops:admin:s3cret",  # no such role
        "ops::s3cret",  # no role
        "o ps:viewer:s3cret",  # not a principal name
        "ops:viewer:",  # no secret
    ],
)
def test_a_malformed_entry_is_a_configuration_error_that_never_echoes_it(entry: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ApiAuth([entry])
    assert "s3cret" not in str(raised.value)


def test_two_credentials_with_one_secret_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="share"):
        ApiAuth(["a:viewer:same", "b:approver:same"])


def test_the_compact_and_the_json_forms_say_the_same() -> None:
    compact = parse_credentials("alice:fleet_manager+viewer:k1, bob:approver:sha256:" + "0" * 64)
    as_json = parse_credentials(
        '[{"principal": "alice", "roles": ["fleet_manager", "viewer"], "key": "k1"},'
        ' {"principal": "bob", "roles": ["approver"], "key": "sha256:' + "0" * 64 + '"}]'
    )
    assert compact == as_json
    assert compact[0] == Credential("alice", frozenset({Role.FLEET_MANAGER, Role.VIEWER}), "k1")
    assert "k1" not in repr(compact[0])


def test_a_missing_role_is_403_in_the_error_shape() -> None:
    auth = ApiAuth(["viewer:viewer:v-key", "ops:operator:o-key", "fm:fleet_manager:f-key"])
    app = build_app(ApiServices(), auth, modules=[health], extra=_routes)
    viewer = {"X-API-Key": "v-key"}
    assert call(app, "GET", "/api/v1/test/whoami", headers=viewer)[0] == 200
    status, headers, body = call(
        app, "POST", "/api/v1/test/things", body={"name": "a"}, headers=viewer
    )
    assert status == 403
    assert headers["content-type"] == "application/json"
    assert body["reason"] == "forbidden"
    assert "fleet_manager" in body["detail"]
    assert "viewer" in body["detail"]
    # the role check comes before validation: no 400 tells a viewer about the body
    assert call(app, "POST", "/api/v1/test/things", body={"bad": 1}, headers=viewer)[0] == 403
    # DLQ replay is the operator's, not the fleet manager's
    fleet_manager = {"X-API-Key": "f-key"}
    assert call(app, "POST", "/api/v1/dlq/ota/replay", headers=fleet_manager)[0] == 403
    assert call(app, "POST", "/api/v1/dlq/ota/replay", headers={"X-API-Key": "o-key"})[0] == 200
    assert (
        call(app, "POST", "/api/v1/test/things", body={"name": "a"}, headers=fleet_manager)[0]
        == 201
    )


def test_unlisted_routes_default_to_reads_for_all_and_writes_for_fleet_managers() -> None:
    assert allowed_roles("GET", "/api/v1/ota/anything") == frozenset(Role)
    assert allowed_roles("DELETE", "/api/v1/ota/anything") == {Role.FLEET_MANAGER}
    assert allowed_roles("POST", "/api/v1/ota/campaigns/<campaign_id>/approve") == {Role.APPROVER}


def test_no_credential_configured_lets_nobody_in() -> None:
    app = build_app(ApiServices(), ApiAuth(), modules=[health])
    assert call(app, "GET", "/health/detailed", headers={"X-API-Key": ""})[0] == 401
    assert call(app, "GET", "/health/detailed", headers={"X-API-Key": "anything"})[0] == 401
    assert call(app, "GET", "/health")[0] == 200


def test_the_internal_call_header_bypasses_nothing(app: OtaApi) -> None:
    # The PRD's X-Internal-Call bypass is deliberately not implemented.
    assert call(app, "GET", "/api/v1/test/whoami", headers={"X-Internal-Call": "true"})[0] == 401


def test_an_api_gateway_authorizer_is_trusted_only_when_configured() -> None:
    claims = {"authorizer": {"claims": {"sub": "user-7"}}}
    untrusting = make_app(extra=_routes)
    assert call(untrusting, "GET", "/api/v1/test/whoami", request_context=claims)[0] == 401
    trusting = build_app(
        ApiServices(), ApiAuth(trust_gateway_authorizer=True), modules=[health], extra=_routes
    )
    # authenticated, but the authorizer gave no role
    assert call(trusting, "GET", "/api/v1/test/whoami", request_context=claims)[0] == 403
    claims["authorizer"]["claims"]["cognito:groups"] = "[viewer other]"
    status, _, body = call(trusting, "GET", "/api/v1/test/whoami", request_context=claims)
    assert (status, body) == (200, {"id": "authorizer:user-7", "method": "authorizer"})


def test_from_env_reads_keys_tokens_and_the_authorizer_flag() -> None:
    auth = ApiAuth.from_env(
        {
            "V2C_API_KEYS": " a:viewer:k1, ,b:approver+viewer:k2 ",
            "V2C_API_TOKENS": "c:operator:t1",
            "V2C_API_TRUST_AUTHORIZER": "true",
        }
    )
    assert auth.trust_gateway_authorizer
    assert auth.authenticate({"headers": {"X-API-Key": "k2"}}).roles == {
        Role.APPROVER,
        Role.VIEWER,
    }
    assert auth.authenticate({"headers": {"Authorization": "Bearer t1"}}).id == "c"
    assert not ApiAuth.from_env({}).trust_gateway_authorizer
