"""API authentication: an API key or a bearer token before anything else; 401 with a JSON detail."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from api_events import API_KEY, AUTH, TOKEN, call, make_app
from pydantic import BaseModel

from v2c.contract.errors import ConfigurationError
from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
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
    # the principal names the credential without revealing it
    assert body["id"] == "api-key:" + hashlib.sha256(API_KEY.encode()).hexdigest()[:12]
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
    assert body["by"].startswith("api-key:")


def test_health_and_the_openapi_document_are_public_detailed_health_is_not(app: OtaApi) -> None:
    assert call(app, "GET", "/health")[0] == 200
    assert call(app, "GET", "/api/v1/openapi.json")[0] == 200
    assert call(app, "GET", "/health/detailed")[0] == 401
    assert call(app, "GET", "/health/detailed", headers=AUTH)[0] == 200


def test_a_sha256_entry_accepts_the_key_it_hashes() -> None:
    digest = hashlib.sha256(b"s3cret").hexdigest()
    app = build_app(ApiServices(), ApiAuth([f"sha256:{digest}"]), modules=[health])
    assert call(app, "GET", "/health/detailed", headers={"X-API-Key": "s3cret"})[0] == 200
    assert call(app, "GET", "/health/detailed", headers={"X-API-Key": digest})[0] == 401


def test_a_malformed_sha256_entry_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        ApiAuth(["sha256:abc"])


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
    status, _, body = call(trusting, "GET", "/api/v1/test/whoami", request_context=claims)
    assert (status, body) == (200, {"id": "authorizer:user-7", "method": "authorizer"})


def test_from_env_reads_keys_tokens_and_the_authorizer_flag() -> None:
    auth = ApiAuth.from_env(
        {"V2C_API_KEYS": " k1, ,k2 ", "V2C_API_TOKENS": "t1", "V2C_API_TRUST_AUTHORIZER": "true"}
    )
    assert auth.trust_gateway_authorizer
    for headers in ({"X-API-Key": "k2"}, {"Authorization": "Bearer t1"}):
        assert auth.authenticate({"headers": headers}).id
    assert not ApiAuth.from_env({}).trust_gateway_authorizer
