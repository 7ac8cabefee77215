"""The Lambda entry point over moto: /health/detailed probes the real tables and bucket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from v2c.handlers import ota_api
from v2c.handlers.api import config as api_config
from v2c.infra.local.wiring import handler_environment

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


KEY = "moto-health-key"


@pytest.fixture
def lambda_env(aws_stack: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsStack]:
    for name, value in handler_environment(aws_stack.settings()).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("V2C_API_KEYS", f"health-checker:viewer:{KEY}")
    api_config.set_default_app(None)  # a cold start, from this environment
    yield aws_stack
    api_config.set_default_app(None)


def _detailed() -> tuple[int, dict[str, Any]]:
    event = {
        "httpMethod": "GET",
        "path": "/health/detailed",
        "headers": {"X-API-Key": KEY},
        "requestContext": {"requestId": "r-1"},
    }
    answer = ota_api.lambda_handler(event, None)
    return answer["statusCode"], json.loads(answer["body"])


def test_every_dependency_answers(lambda_env: AwsStack) -> None:
    status, body = _detailed()
    assert status == 200, body
    names = lambda_env.names
    assert body["components"].keys() == {
        f"dynamodb:{names.firmware_table}",
        f"dynamodb:{names.campaigns_table}",
        f"s3:{names.firmware_bucket}",
    }


def test_a_missing_bucket_is_503_naming_it(lambda_env: AwsStack) -> None:
    s3, bucket = lambda_env.aws.client("s3"), lambda_env.names.firmware_bucket
    # The stack leaves objects in it (the fleet index's "built" marker), in
    # a versioned bucket: every version goes before the bucket can.
    listing = s3.list_object_versions(Bucket=bucket)
    for entry in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]:
        s3.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
    s3.delete_bucket(Bucket=bucket)
    status, body = _detailed()
    assert status == 503
    components = body["components"]
    assert components[f"s3:{lambda_env.names.firmware_bucket}"]["status"] == "error"
    assert components[f"dynamodb:{lambda_env.names.firmware_table}"]["status"] == "ok"
