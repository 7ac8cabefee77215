"""The Lambda entry point: built once from the environment; a broken one still answers JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from api_events import AUTH, make_app, rest_event

from v2c.handlers import ota_api
from v2c.handlers.api import config as api_config


@pytest.fixture(autouse=True)
def _fresh_app() -> Iterator[None]:
    api_config.set_default_app(None)
    yield
    api_config.set_default_app(None)


def test_the_handler_resolves_with_the_installed_app() -> None:
    api_config.set_default_app(make_app())
    answer = ota_api.lambda_handler(rest_event("GET", "/health/detailed", headers=AUTH), None)
    assert answer["statusCode"] == 200


def test_the_app_is_built_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2C_API_KEYS", "ops:viewer:env-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    first = api_config.default_app()
    assert api_config.default_app() is first
    headers = {"X-API-Key": "env-key"}
    assert ota_api.lambda_handler(rest_event("GET", "/health"), None)["statusCode"] == 200
    answer = ota_api.lambda_handler(rest_event("GET", "/api/v1/ota/x", headers=headers), None)
    assert answer["statusCode"] == 404  # authenticated by the key from the environment


def test_a_broken_configuration_answers_500_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2C_API_KEYS", "ops:viewer:sha256:not-hex")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    answer = ota_api.lambda_handler(rest_event("GET", "/health"), None)
    assert answer["statusCode"] == 500
    assert json.loads(answer["body"]) == {
        "detail": "internal server error",
        "reason": "configuration_error",
    }


def test_health_checks_probe_the_configured_tables_and_bucket() -> None:
    session = boto3.Session(
        region_name="eu-central-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    env = {"FIRMWARE_TABLE": "fw", "CAMPAIGNS_TABLE": "", "FIRMWARE_BUCKET": "bkt"}
    services = api_config.build_services(env, session)
    assert sorted(services.health_checks) == ["dynamodb:fw", "dynamodb:v2c-campaigns", "s3:bkt"]
    assert services.health_timeout_s == 2.0
