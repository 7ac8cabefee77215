"""The campaign API over HTTP, end to end through the adapter, the resolver
and the production services on moto: what a fleet manager's script sees,
and what `v2c campaign` prints."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
import requests
from api_support import API_KEY, APPROVER, APPROVER_HEADERS, AUTH_HEADERS
from ota_support import RecordingSink, fleet
from typer.testing import CliRunner

from v2c.handlers.api import ApiServices
from v2c.handlers.ota.config import OtaServices
from v2c.infra.cli.main import app as cli
from v2c.infra.local.http_adapter import ApiHttpServer

if TYPE_CHECKING:
    pass


BASE = "/api/v1/ota"


@pytest.fixture
def api_services(moto_campaign_api: ApiServices) -> ApiServices:
    return moto_campaign_api


@pytest.fixture
def firmware_id(moto_ota: OtaServices, registered_firmware: str) -> str:
    """The 2.0.0 package and twelve Accords on 1.0.0 to deploy it to."""
    moto_ota.deps.fleet.put(fleet(12))
    return registered_firmware


def _post(server: ApiHttpServer, path: str, body: Any = None, **headers: str) -> requests.Response:
    return requests.post(
        f"{server.base_url}{BASE}{path}",
        json=body if body is not None else {},
        headers={**AUTH_HEADERS, **headers},
        timeout=30,
    )


def _get(server: ApiHttpServer, path: str) -> requests.Response:
    return requests.get(f"{server.base_url}{BASE}{path}", headers=AUTH_HEADERS, timeout=30)


def test_invalid_campaign_answers_400_with_every_field(api_server: ApiHttpServer) -> None:
    answer = _post(
        api_server,
        "/campaigns",
        {
            "name": "bad",
            "firmware_id": "f" * 32,
            "target_filter": "model = 'Accord' AND (year >= 2023",
            "batch_size": 0,
        },
    )
    assert answer.status_code == 400
    body = answer.json()
    assert "batch_size" in body["detail"]
    assert "target_filter" in body["detail"] or "position" in json.dumps(body)
    assert (
        requests.post(f"{api_server.base_url}{BASE}/campaigns", json={}, timeout=10).status_code
        == 401
    )


def test_campaign_lifecycle_over_http(
    api_server: ApiHttpServer, firmware_id: str, ota_sink: RecordingSink
) -> None:
    spec = {
        "name": "spring",
        "firmware_id": firmware_id,
        "target_filter": "model = 'Accord' AND year >= 2023",
        "deployment_strategy": "canary",
        "canary_size": 3,
        "requires_approval": True,
    }
    created = _post(api_server, "/campaigns", spec, **{"Idempotency-Key": "spring-1"})
    assert created.status_code == 201, created.text
    campaign = created.json()
    campaign_id = campaign["campaign_id"]
    assert campaign["created"] is True
    assert campaign["target_count"] == 12
    assert campaign["created_by"]  # the authenticated principal
    again = _post(api_server, "/campaigns", spec, **{"Idempotency-Key": "spring-1"})
    assert again.json()["campaign_id"] == campaign_id
    assert again.json()["created"] is False

    refused = _post(api_server, f"/campaigns/{campaign_id}/start")
    assert refused.status_code == 409
    assert "approval" in refused.json()["detail"]
    approved = _post(api_server, f"/campaigns/{campaign_id}/approve", **APPROVER_HEADERS)
    assert approved.status_code == 200, approved.text
    assert approved.json()["approved_by"] == APPROVER
    started = _post(api_server, f"/campaigns/{campaign_id}/start").json()
    assert started["status"] == "in_progress"
    assert started["counters"]["in_progress"] == 3  # the canary only
    assert len(ota_sink.sent) == 3

    paused = _post(api_server, f"/campaigns/{campaign_id}/pause").json()
    assert paused["status"] == "paused"
    assert _post(api_server, f"/campaigns/{campaign_id}/pause").status_code == 409
    assert _post(api_server, f"/campaigns/{campaign_id}/resume").json()["status"] == "in_progress"
    listed = _get(api_server, "/campaigns?status=in_progress").json()
    assert [c["campaign_id"] for c in listed["items"]] == [campaign_id]
    stats = _get(api_server, f"/stats/campaigns/{campaign_id}").json()
    assert stats["counters"]["total"] == 12
    cancelled = _post(api_server, f"/campaigns/{campaign_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["counters"]["cancelled"] == 12
    assert cancelled["counters"]["total"] == 12
    assert _get(api_server, f"/campaigns/{'0' * 32}").status_code == 404


def test_cli_creates_starts_and_shows_a_campaign(
    api_server: ApiHttpServer, firmware_id: str
) -> None:
    runner = CliRunner()
    target = ["--api-url", api_server.base_url, "--api-key", API_KEY]
    created = runner.invoke(
        cli,
        [
            "campaign", "create", "--name", "cli", "--firmware", firmware_id,
            "--filter", "model = 'Accord'", "--strategy", "immediate", "--json", *target,
        ],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    campaign_id = json.loads(created.stdout)["campaign_id"]
    started = runner.invoke(cli, ["campaign", "start", campaign_id, *target])
    assert started.exit_code == 0, started.output
    assert "in_progress" in started.stdout
    bad = runner.invoke(cli, ["campaign", "start", campaign_id, *target])
    assert bad.exit_code == 3  # 409: refused (`v2c.infra.cli.errors`)
    listed = runner.invoke(cli, ["campaign", "list", "--json", *target])
    assert campaign_id in listed.stdout
