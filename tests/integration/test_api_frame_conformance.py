"""The frame under schemathesis with route shapes the real modules will have (`api_sample_routes`).

Validation (400 naming the field, strict JSON types, no unknown fields),
decoded path parameters, 404/405/409/415 answers and auth are checked on a
body, path and query operation each, so a new route module starts from a
frame known to conform.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import api_sample_routes
import pytest
import requests
import schemathesis
from api_support import API_KEY, AUTH_HEADERS, PRINCIPAL, TOKEN
from hypothesis import HealthCheck, settings
from schemathesis import Case

from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
from v2c.handlers.api.openapi import render_text
from v2c.infra.local.http_adapter import ApiHttpServer

CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": {"ApiKeyAuth": {"api_key": API_KEY}, "BearerAuth": {"bearer": TOKEN}}},
        "generation": {"max-examples": 15, "deterministic": True, "database": "none"},
    }
)
_DOCUMENT = render_text(build_app(ApiServices(), ApiAuth(), extra=api_sample_routes.register))
schema = schemathesis.openapi.from_dict(json.loads(_DOCUMENT), config=CONFIG).include(
    path_regex="/samples"
)


@pytest.fixture
def api_extra_routes() -> Callable[[OtaApi], None]:
    return api_sample_routes.register


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_sample_routes_conform(case: Case, api_server: ApiHttpServer) -> None:
    case.call_and_validate(base_url=api_server.base_url, timeout=10)


def test_a_sample_lives_through_create_get_start_conflict_delete(
    api_server: ApiHttpServer,
) -> None:
    base = f"{api_server.base_url}{api_sample_routes.SAMPLE}"
    with requests.Session() as http:
        http.headers.update(AUTH_HEADERS)
        created = http.post(base, json={"name": "fw rollout", "firmware_id": "a" * 32}, timeout=5)
        assert created.status_code == 201, created.text
        sample = created.json()
        assert sample["created_by"] == PRINCIPAL
        url = f"{base}/{sample['sample_id']}"
        assert http.get(url, timeout=5).json() == sample
        assert http.post(f"{url}/start", timeout=5).status_code == 200
        again = http.post(f"{url}/start", timeout=5)
        assert (again.status_code, again.json()["reason"]) == (409, "conflict")
        listed = http.get(base, params={"status": "running"}, timeout=5).json()
        assert [s["sample_id"] for s in listed["samples"]] == [sample["sample_id"]]
        assert http.delete(url, timeout=5).status_code == 200
        gone = http.get(url, timeout=5)
        assert (gone.status_code, gone.json()["detail"]) == (
            404,
            f"sample {sample['sample_id']} not found",
        )


def test_path_parameters_arrive_decoded(api_server: ApiHttpServer) -> None:
    answer = requests.get(
        f"{api_server.base_url}{api_sample_routes.SAMPLE}/a%20b", headers=AUTH_HEADERS, timeout=5
    )
    assert answer.json()["detail"] == "sample a b not found"


def test_strict_bodies_refuse_coercion_and_unknown_fields(api_server: ApiHttpServer) -> None:
    base = f"{api_server.base_url}{api_sample_routes.SAMPLE}"
    good = {"name": "n", "firmware_id": "b" * 32}
    for bad, field in (
        ({**good, "auto_rollback": 0}, "auto_rollback"),
        ({**good, "failure_threshold_percent": "5"}, "failure_threshold_percent"),
        ({**good, "nmae": "typo"}, "nmae"),
    ):
        answer = requests.post(base, json=bad, headers=AUTH_HEADERS, timeout=5)
        assert answer.status_code == 400, bad
        assert answer.json()["detail"].startswith(f"{field}: ")
    integral = requests.post(
        base, json={**good, "failure_threshold_percent": 5.0}, headers=AUTH_HEADERS, timeout=5
    )
    assert integral.status_code == 201  # JSON Schema's integer includes 5.0
