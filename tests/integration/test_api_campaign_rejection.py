"""Approve with a comment, reject with a reason: over HTTP and through `v2c campaign`,
on the production services over moto (PRD E2-US6 AC2). A rejected campaign is final and
nobody is ever notified of it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from api_support import APPROVER, APPROVER_HEADERS, APPROVER_KEY, AUTH_HEADERS
from ota_support import RecordingSink, fleet
from typer.testing import CliRunner

from v2c.handlers.api import ApiServices
from v2c.handlers.ota.config import OtaServices
from v2c.infra.cli import errors as cli_errors
from v2c.infra.cli.main import app as cli
from v2c.infra.local.http_adapter import ApiHttpServer

CAMPAIGNS = "/api/v1/ota/campaigns"


@pytest.fixture
def api_services(moto_campaign_api: ApiServices) -> ApiServices:
    return moto_campaign_api


@pytest.fixture
def firmware_id(moto_ota: OtaServices, registered_firmware: str) -> str:
    moto_ota.deps.fleet.put(fleet(6))
    return registered_firmware


def _call(
    server: ApiHttpServer, method: str, path: str, headers: dict[str, str], body: Any = None
) -> requests.Response:
    return requests.request(
        method, f"{server.base_url}{path}", json=body, headers=headers, timeout=60
    )


def _create(server: ApiHttpServer, firmware_id: str, *, requires_approval: bool = True) -> str:
    spec = {
        "name": "needs a yes",
        "firmware_id": firmware_id,
        "target_filter": "model = 'Accord'",
        "deployment_strategy": "immediate",
        "requires_approval": requires_approval,
    }
    created = _call(server, "POST", CAMPAIGNS, AUTH_HEADERS, spec)
    assert created.status_code == 201, created.text
    return str(created.json()["campaign_id"])


def test_an_approver_rejects_a_campaign_over_http(
    api_server: ApiHttpServer, firmware_id: str, ota_sink: RecordingSink
) -> None:
    campaign_id = _create(api_server, firmware_id)
    reject = f"{CAMPAIGNS}/{campaign_id}/reject"
    # The approver's route: a fleet manager is refused before the body is read.
    refused = _call(api_server, "POST", reject, AUTH_HEADERS, {"reason": "no"})
    assert (refused.status_code, refused.json()["reason"]) == (403, "forbidden")
    # A reason is required.
    for body in (None, {}, {"reason": ""}):
        bad = _call(api_server, "POST", reject, APPROVER_HEADERS, body)
        assert bad.status_code == 400, (body, bad.text)
    rejected = _call(
        api_server, "POST", reject, APPROVER_HEADERS, {"reason": "the EU fleet is frozen"}
    )
    assert rejected.status_code == 200, rejected.text
    shown = _call(api_server, "GET", f"{CAMPAIGNS}/{campaign_id}", AUTH_HEADERS).json()
    assert shown["status"] == "rejected"
    assert shown["status_reason"] == "the EU fleet is frozen"
    assert shown["rejected_by"] == APPROVER  # the principal, not a name from the body
    assert shown["rejected_at"] == shown["finished_at"] is not None
    assert shown["approved_by"] is None
    listed = _call(api_server, "GET", f"{CAMPAIGNS}?status=rejected", AUTH_HEADERS).json()
    assert [c["campaign_id"] for c in listed["items"]] == [campaign_id]
    # Final: nothing starts, approves or rejects it again (409), and nobody heard of it.
    for verb, headers, body in (
        ("start", AUTH_HEADERS, None),
        ("approve", APPROVER_HEADERS, {"comment": "late"}),
        ("reject", APPROVER_HEADERS, {"reason": "again"}),
        ("cancel", AUTH_HEADERS, None),
    ):
        again = _call(api_server, "POST", f"{CAMPAIGNS}/{campaign_id}/{verb}", headers, body)
        assert (again.status_code, again.json()["reason"]) == (409, "conflict"), verb
    assert ota_sink.sent == []
    # A campaign that needs no approval cannot be rejected: cancel is its stop.
    plain = _create(api_server, firmware_id, requires_approval=False)
    conflict = _call(
        api_server, "POST", f"{CAMPAIGNS}/{plain}/reject", APPROVER_HEADERS, {"reason": "x"}
    )
    assert conflict.status_code == 409
    assert "no approval" in conflict.json()["detail"]


def test_the_cli_approves_with_a_comment_and_rejects_with_a_reason(
    api_server: ApiHttpServer, firmware_id: str, ota_sink: RecordingSink
) -> None:
    runner = CliRunner()
    as_approver = ["--api-url", api_server.base_url, "--api-key", APPROVER_KEY, "--json"]
    first, second = _create(api_server, firmware_id), _create(api_server, firmware_id)
    no_reason = runner.invoke(cli, ["campaign", "reject", first, *as_approver])
    assert no_reason.exit_code == cli_errors.USAGE, no_reason.output
    rejected = runner.invoke(
        cli, ["campaign", "reject", first, "--reason", "wrong package", *as_approver]
    )
    assert rejected.exit_code == 0, rejected.output
    answer = json.loads(rejected.stdout)
    assert (answer["status"], answer["status_reason"]) == ("rejected", "wrong package")
    assert answer["rejected_by"] == APPROVER
    twice = runner.invoke(cli, ["campaign", "reject", first, "--reason", "x", *as_approver])
    assert twice.exit_code == cli_errors.REFUSED, twice.output  # 409
    approved = runner.invoke(
        cli, ["campaign", "approve", second, "--comment", "release notes read", *as_approver]
    )
    assert approved.exit_code == 0, approved.output
    answer = json.loads(approved.stdout)
    assert (answer["approved_by"], answer["approval_comment"]) == (APPROVER, "release notes read")
    assert answer["status"] == "created"  # approved, not started
    assert ota_sink.sent == []
