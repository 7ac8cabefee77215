"""Where the CLI's API client finds the API and its credential (no I/O when
the environment says all: a deployment on AWS has no stack directory)."""

from __future__ import annotations

import pytest

from v2c.infra.cli.api_client import ApiClient, ApiTarget, resolve_target


def test_a_cognito_token_and_url_need_no_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2C_API_URL", "https://abc.execute-api.eu-west-1.amazonaws.com/prod/")
    monkeypatch.setenv("V2C_API_TOKEN", "eyJraWQ.id-token")
    monkeypatch.delenv("V2C_API_KEY", raising=False)
    target = resolve_target(stack_dir=None)
    assert target == ApiTarget(
        "https://abc.execute-api.eu-west-1.amazonaws.com/prod", None, "eyJraWQ.id-token"
    )
    client = ApiClient(target)
    assert client._session.headers["Authorization"] == "eyJraWQ.id-token"
    assert "X-API-Key" not in client._session.headers


def test_an_api_key_wins_over_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2C_API_TOKEN", "t")
    target = resolve_target(url="http://127.0.0.1:1", key="k")
    assert (target.key, target.token) == ("k", None)
