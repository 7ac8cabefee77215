"""Failures by reason counted on the campaign item (moto, real HTTP): GET campaign
answers what the statistics fold from every record, after a batch with
failures of two reasons, a repeat, a retry and the retried vehicle's new
failure; a campaign created before the count answers null."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from api_support import AUTH_HEADERS
from ota_support import VehicleReporter, fleet

from v2c.handlers.api import ApiServices
from v2c.handlers.ota.campaigns.record import REASONS_COUNTED
from v2c.handlers.ota.config import OtaServices
from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.v1.ota_pb2 import OTAStatus

OTA = "/api/v1/ota"
S = OTAStatus.State
R = OTAStatus.Reason


@pytest.fixture
def api_services(moto_campaign_api: ApiServices) -> ApiServices:
    return moto_campaign_api


def call(server: ApiHttpServer, method: str, path: str, body: Any = None) -> Any:
    answer = requests.request(
        method, f"{server.base_url}{OTA}{path}", json=body, headers=AUTH_HEADERS, timeout=30
    )
    assert answer.status_code < 300, answer.text
    return answer.json()


def both(server: ApiHttpServer, campaign_id: str) -> tuple[Any, Any]:
    """The campaign's own count (one GetItem) and the statistics' fold."""
    campaign = call(server, "GET", f"/campaigns/{campaign_id}")
    stats = call(server, "GET", f"/stats/campaigns/{campaign_id}")
    return campaign["failures_by_reason"], stats["failures_by_reason"]


def test_get_campaign_counts_failures_by_reason_as_the_statistics_fold_the_records(
    api_server: ApiHttpServer, moto_ota: OtaServices, registered_firmware: str
) -> None:
    # Given six Accords notified at once, the failure thresholds out of the way
    moto_ota.deps.fleet.put(fleet(6))
    body = {
        "name": "reasons",
        "firmware_id": registered_firmware,
        "target_filter": "model = 'Accord'",
        "deployment_strategy": "immediate",
        "failure_threshold_percent": 100,
        "pause_threshold_percent": 100,
        "auto_rollback": False,
    }
    campaign_id = call(api_server, "POST", "/campaigns", body)["campaign_id"]
    started = call(api_server, "POST", f"/campaigns/{campaign_id}/start")
    assert started["failures_by_reason"] == {}  # counted from creation: none yet
    release = started["release_update_id"]
    vehicles = sorted(v.vehicle_id for v in fleet(6))
    reporter = VehicleReporter()

    def failing(vehicle: str, reason: int, final: int = S.FAILED) -> list[OTAStatus]:
        steps = [S.ACCEPTED, S.DOWNLOADING]
        if final == S.ROLLED_BACK:
            steps += [S.DOWNLOADED, S.INSTALLING]
        return [reporter.status(vehicle, release, s) for s in steps] + [
            reporter.status(vehicle, release, final, reason=reason)
        ]

    # When one batch brings two checksum failures, a boot failure rolled back,
    # a failure without a reason, a completed update, and a repeated report
    batch = [
        *failing(vehicles[0], R.CHECKSUM_MISMATCH),
        *failing(vehicles[1], R.CHECKSUM_MISMATCH),
        *failing(vehicles[2], R.BOOT_FAILURE, S.ROLLED_BACK),
        *failing(vehicles[3], 0),
        *[reporter.status(vehicles[4], release, s) for s in (S.ACCEPTED, S.DOWNLOADING)],
    ]
    batch.insert(3, batch[2])  # vehicles[0]'s FAILED twice: a duplicate
    moto_ota.status.apply_batch(batch)

    # Then the campaign's count is the statistics' fold, the missing reason named by its state
    counted, folded = both(api_server, campaign_id)
    assert counted == folded == {"CHECKSUM_MISMATCH": 2, "BOOT_FAILURE": 1, "failed": 1}
    assert list(counted) == ["CHECKSUM_MISMATCH", "BOOT_FAILURE", "failed"]  # most first

    # When the queue delivers the whole batch again: nothing moves
    moto_ota.status.apply_batch(batch)
    assert both(api_server, campaign_id) == (counted, folded)

    # When vehicles[1]'s update is retried, it is no failure any more
    update = moto_ota.deps.updates.get(vehicles[1], release)
    call(api_server, "POST", f"/updates/{update.device_update_id}/retry")
    counted, folded = both(api_server, campaign_id)
    assert counted == folded == {"CHECKSUM_MISMATCH": 1, "BOOT_FAILURE": 1, "failed": 1}

    # And when it fails again for another reason, in a batch with a stale repeat
    again = [
        reporter.status(vehicles[1], release, S.ACCEPTED),
        reporter.status(vehicles[1], release, S.FAILED, reason=R.INSUFFICIENT_STORAGE),
        batch[4],  # an old report of vehicles[1]: stale
    ]
    moto_ota.status.apply_batch(again)
    counted, folded = both(api_server, campaign_id)
    assert counted == folded
    assert counted == {
        "CHECKSUM_MISMATCH": 1,
        "BOOT_FAILURE": 1,
        "failed": 1,
        "INSUFFICIENT_STORAGE": 1,
    }
    campaign = call(api_server, "GET", f"/campaigns/{campaign_id}")
    c = campaign["counters"]
    assert sum(counted.values()) == c["failed"] + c["rolled_back"] + c["timed_out"] == 4


def test_a_campaign_from_before_the_count_answers_null_and_the_statistics_still_fold(
    api_server: ApiHttpServer, moto_ota: OtaServices, registered_firmware: str
) -> None:
    moto_ota.deps.fleet.put(fleet(2))
    body = {
        "name": "old",
        "firmware_id": registered_firmware,
        "target_filter": "model = 'Accord'",
        "deployment_strategy": "immediate",
        "auto_rollback": False,
    }
    campaign_id = call(api_server, "POST", "/campaigns", body)["campaign_id"]
    release = call(api_server, "POST", f"/campaigns/{campaign_id}/start")["release_update_id"]
    # An item written before the count existed has no flag (no migration adds one)
    campaigns = moto_ota.deps.campaigns
    campaigns._ddb.update_item(  # type: ignore[attr-defined]
        TableName=campaigns.table,  # type: ignore[attr-defined]
        Key={"campaign_id": {"S": campaign_id}},
        UpdateExpression="REMOVE #f",
        ExpressionAttributeNames={"#f": REASONS_COUNTED},
    )
    reporter = VehicleReporter()
    vehicle = sorted(v.vehicle_id for v in fleet(2))[0]
    moto_ota.status.apply_batch(
        [reporter.status(vehicle, release, S.FAILED, reason=R.CHECKSUM_MISMATCH)]
    )
    counted, folded = both(api_server, campaign_id)
    assert counted is None  # its count began mid-way: not shown, the page reads the statistics
    assert folded == {"CHECKSUM_MISMATCH": 1}
