"""Who may do what, over HTTP on the production services over moto: 401 without a valid
credential, 403 without the route's role, the approver is the authenticated principal and never
the campaign's creator; and the CLI picks the stack's credential of a role with `--as`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from api_support import (
    API_KEY,
    APPROVER,
    APPROVER_HEADERS,
    APPROVER_KEY,
    AUTH_HEADERS,
    BOTH,
    BOTH_KEY,
    PRINCIPAL,
    VIEWER_HEADERS,
    VIEWER_KEY,
)
from hostile_http import campaign_spec
from typer.testing import CliRunner

from v2c.infra.cli import errors as cli_errors
from v2c.infra.cli.main import app as cli
from v2c.infra.local.api_credentials import api_settings, key_file_name
from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.infra.settings import StackSettings, write_settings


@pytest.fixture
def api_server(moto_api_server: ApiHttpServer) -> ApiHttpServer:
    return moto_api_server


OTA = "/api/v1/ota"
CAMPAIGNS = f"{OTA}/campaigns"


def call(
    server: ApiHttpServer,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any = None,
    **kwargs: Any,
) -> requests.Response:
    return requests.request(
        method, f"{server.base_url}{path}", json=body, headers=headers, timeout=60, **kwargs
    )


def assert_refused(answer: requests.Response, status: int, reason: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["reason"] == reason
    assert answer.json()["detail"]


def test_each_role_does_its_part_and_no_more(
    api_server: ApiHttpServer, deployable_firmware: str
) -> None:
    spec = campaign_spec(deployable_firmware, requires_approval=True)
    # No credential, a wrong one: 401.
    assert_refused(call(api_server, "GET", CAMPAIGNS, {}), 401, "missing_credentials")
    assert_refused(
        call(api_server, "GET", CAMPAIGNS, {"X-API-Key": "forged"}), 401, "invalid_credentials"
    )

    # A viewer reads, and nothing else: 403 before the body is even looked at.
    assert call(api_server, "GET", CAMPAIGNS, VIEWER_HEADERS).status_code == 200
    assert call(api_server, "GET", f"{OTA}/firmware", VIEWER_HEADERS).status_code == 200
    refused = call(api_server, "POST", CAMPAIGNS, VIEWER_HEADERS, spec)
    assert_refused(refused, 403, "forbidden")
    assert "fleet_manager" in refused.json()["detail"]
    assert_refused(call(api_server, "POST", CAMPAIGNS, VIEWER_HEADERS, {"x": 1}), 403, "forbidden")
    upload = requests.post(
        f"{api_server.base_url}{OTA}/firmware",
        params={"name": "n", "version": "3.0.0", "device_model": "Accord"},
        data=b"\x7fELF" + b"\0" * 1024,
        headers={**VIEWER_HEADERS, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert_refused(upload, 403, "forbidden")  # the streaming upload is guarded alike
    assert_refused(call(api_server, "GET", "/api/v1/dlq/ota", VIEWER_HEADERS), 403, "forbidden")

    # The fleet manager creates (recorded as the creator) but cannot approve.
    created = call(api_server, "POST", CAMPAIGNS, AUTH_HEADERS, spec)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["campaign_id"]
    assert created.json()["created_by"] == PRINCIPAL
    approve = f"{CAMPAIGNS}/{campaign_id}/approve"
    assert_refused(call(api_server, "POST", approve, AUTH_HEADERS, {}), 403, "forbidden")

    # The approver approves, as itself: a name in the body is refused, not recorded.
    assert_refused(call(api_server, "POST", CAMPAIGNS, APPROVER_HEADERS, spec), 403, "forbidden")
    named = call(api_server, "POST", approve, APPROVER_HEADERS, {"approved_by": "mallory"})
    assert_refused(named, 400, "validation_failed")
    assert "approved_by" in named.json()["detail"]
    assert (
        call(api_server, "GET", f"{CAMPAIGNS}/{campaign_id}", VIEWER_HEADERS).json()["approved_by"]
        is None
    )
    url = f"{api_server.base_url}{approve}"
    approved = requests.post(url, headers=APPROVER_HEADERS, timeout=60)
    assert approved.status_code == 200, approved.text  # no body at all is fine too
    assert approved.json()["approved_by"] == APPROVER
    assert approved.json()["approved_at"]
    again = call(api_server, "POST", approve, APPROVER_HEADERS, {})
    assert_refused(again, 409, "conflict")
    started = call(api_server, "POST", f"{CAMPAIGNS}/{campaign_id}/start", AUTH_HEADERS)
    assert started.json()["status"] == "in_progress"

    # Dead letters are the operator's (the integration key holds that role).
    listed = call(api_server, "GET", "/api/v1/dlq/ota", AUTH_HEADERS)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
    replay = call(api_server, "POST", "/api/v1/dlq/ota/replay", AUTH_HEADERS, {"all": True})
    assert replay.json() == {"outcomes": [], "replayed": 0, "failed": 0, "limit_reached": False}
    assert_refused(
        call(api_server, "POST", "/api/v1/dlq/ota/replay", APPROVER_HEADERS, {"all": True}),
        403,
        "forbidden",
    )


def test_the_creator_cannot_approve_even_holding_the_approver_role(
    api_server: ApiHttpServer, deployable_firmware: str
) -> None:
    both = {"X-API-Key": BOTH_KEY}
    spec = campaign_spec(deployable_firmware, requires_approval=True)
    created = call(api_server, "POST", CAMPAIGNS, both, spec)
    assert created.json()["created_by"] == BOTH
    approve = f"{CAMPAIGNS}/{created.json()['campaign_id']}/approve"
    refused = call(api_server, "POST", approve, both, {})
    assert_refused(refused, 403, "self_approval")
    assert "creator" in refused.json()["detail"]
    assert call(api_server, "POST", approve, APPROVER_HEADERS, {}).status_code == 200


def test_the_cli_acts_as_the_stacks_credential_of_a_role(
    api_server: ApiHttpServer, deployable_firmware: str, tmp_path: Path
) -> None:
    # A stack description as `v2c stack up` writes it: one key file per role.
    keys = {
        "viewer": VIEWER_KEY,
        "fleet_manager": API_KEY,
        "approver": APPROVER_KEY,
        "operator": API_KEY,
    }
    settings = StackSettings(api=api_settings(api_server.base_url, tmp_path))
    for role, key in keys.items():
        (tmp_path / key_file_name_of(role)).write_text(key + "\n")
    write_settings(settings, tmp_path)
    runner = CliRunner()
    stack = ["--stack", str(tmp_path)]
    create = [
        "campaign", "create", "--name", "cli", "--firmware", deployable_firmware,
        "--filter", "model = 'Accord'", "--strategy", "immediate", "--json",
    ]  # fmt: skip
    as_viewer = runner.invoke(cli, [*create, *stack, "--as", "viewer"])
    assert as_viewer.exit_code == cli_errors.REFUSED, as_viewer.output  # 403
    assert "fleet_manager role" in as_viewer.output
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(campaign_spec(deployable_firmware, requires_approval=True)))
    created = runner.invoke(cli, ["campaign", "create", "-f", str(spec_file), "--json", *stack])
    assert created.exit_code == 0, created.output  # the fleet manager by default
    campaign_id = json.loads(created.stdout)["campaign_id"]
    approved = runner.invoke(cli, ["campaign", "approve", campaign_id, "--json", *stack])
    assert approved.exit_code == 0, approved.output  # `approve` acts as the approver
    assert json.loads(approved.stdout)["approved_by"] == APPROVER
    show = ["campaign", "show", campaign_id, "--json"]
    shown = runner.invoke(cli, [*show, *stack, "--as", "viewer"])
    assert json.loads(shown.stdout)["approved_by"] == APPROVER
    unknown = runner.invoke(cli, ["campaign", "list", *stack, "--as", "root"])
    assert unknown.exit_code in (cli_errors.USAGE, cli_errors.REFUSED), unknown.output
    assert "unknown role" in unknown.output


def key_file_name_of(role: str) -> str:
    from v2c.handlers.api.roles import Role

    return key_file_name(Role(role))
