"""An OTA campaign through the template's functions alone, from the built
artifact, against the real moto server (`lambda_emulator`): vehicles
onboarded through the API (AWS IoT issues their certificates from CSRs),
a package uploaded, a campaign created and started (its notifications go
out through the IoT data plane), a vehicle's status report taken from the
ingest queue by the status function, the scheduled monitor pass, and a
decommission whose `device.deleted` the OTA consumer takes off the bus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from lambda_artifact import built_artifact

from v2c.contract.certificate_renewal import build_csr
from v2c.contract.topics import Domain, Topic
from v2c.handlers.ota.device_events import DEVICE_DELETED, VEHICLES_SOURCE
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.local.lambda_emulator import EmulatedAccount, wait_until_empty
from v2c.infra.local.template_functions import read_template
from v2c.v1.ota_pb2 import OTAStatus

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

TEMPLATE = read_template(TEMPLATE_PATH)
API = TEMPLATE.by_handler("v2c.handlers.ota_api.lambda_handler").logical_id
STATUS = TEMPLATE.by_handler("v2c.handlers.ota_status.lambda_handler").logical_id
MONITOR = TEMPLATE.by_handler("v2c.handlers.ota_monitor.lambda_handler").logical_id
DEVICE_EVENTS = TEMPLATE.by_handler("v2c.handlers.ota_device_events.lambda_handler").logical_id
REGION = "eu-west-1"
VINS = tuple(f"VIN-1HGBH41JXMN10920{i}" for i in range(3))
MANAGER = {"sub": "alice-sub", "cognito:username": "alice", "cognito:groups": "fleet_manager"}
JSON = [("Content-Type", "application/json")]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_artifact(tmp_path_factory)


@pytest.fixture
def account(aws_stack: AwsStack, artifact: Path, tmp_path: Path) -> Iterator[EmulatedAccount]:
    with EmulatedAccount(TEMPLATE, artifact, aws_stack.aws, tmp_path / "logs") as emulated:
        emulated.provision_iot()
        yield emulated


def _call(account: EmulatedAccount, method: str, path: str, body: Any = None) -> Any:
    raw = b"" if body is None else json.dumps(body).encode()
    status, _, answer = account.api(method, path, body=raw, headers=JSON, claims=MANAGER)
    assert 200 <= status < 300, (method, path, status, answer)
    return json.loads(answer) if answer else None


def _records(aws_stack: AwsStack, campaign_id: str) -> dict[str, dict[str, Any]]:
    items = aws_stack.aws.client("dynamodb").query(
        TableName=aws_stack.names.vehicle_updates_table,
        IndexName="by-campaign",
        KeyConditionExpression="campaign_id = :c",
        ExpressionAttributeValues={":c": {"S": campaign_id}},
    )["Items"]
    return {i["vehicle_id"]["S"]: i for i in items}


def test_a_campaign_reaches_vehicles_onboarded_through_the_api(
    account: EmulatedAccount, aws_stack: AwsStack
) -> None:
    iot = aws_stack.aws.client("iot")
    # Given three vehicles registered with their CSRs through the API
    for vin in VINS:
        key = ec.generate_private_key(ec.SECP256R1())
        registered = _call(
            account,
            "POST",
            "/api/v1/vehicles",
            {
                "vehicle_id": vin,
                "model": "Accord",
                "region": REGION,
                "year": 2024,
                "csr": build_csr(key, vin),
            },
        )
        pem = registered["certificate"]["pem"]
        certificate = x509.load_pem_x509_certificate(pem.encode())
        # (moto's CreateCertificateFromCsr makes a certificate of its own key;
        # IoT Core certifies the CSR's: the issuer's contract, not checked here)
        assert registered["certificate"]["certificate_id"]
        assert certificate.not_valid_after_utc > certificate.not_valid_before_utc
        # ... whose things (with the region the IoT policy reads) hold their certificates
        thing = iot.describe_thing(thingName=vin)
        assert thing["thingTypeName"] == "v2c-vehicle"
        assert thing["attributes"]["region"] == REGION
        assert len(iot.list_thing_principals(thingName=vin)["principals"]) == 1
    # And a package for them
    status, _, body = account.api(
        "POST",
        "/api/v1/ota/firmware?name=tcu&version=2.0.0&device_model=Accord&manufacturer=Acme"
        "&filename=tcu.bin",
        body=b"image" * 2000,
        headers=[("Content-Type", "application/octet-stream")],
        claims=MANAGER,
    )
    assert status == 201, body
    firmware_id = json.loads(body)["firmware_id"]

    # When a campaign over the model is created and started
    campaign = _call(
        account,
        "POST",
        "/api/v1/ota/campaigns",
        {
            "name": "accord 2.0",
            "firmware_id": firmware_id,
            "target_filter": "model = 'Accord'",
            "pause_threshold_percent": 100,
            "failure_threshold_percent": 100,
            "deployment_strategy": "immediate",
        },
    )
    campaign_id = campaign["campaign_id"]
    _call(account, "POST", f"/api/v1/ota/campaigns/{campaign_id}/start")

    # Then every onboarded vehicle was notified
    records = _records(aws_stack, campaign_id)
    shown = _call(account, "GET", f"/api/v1/ota/campaigns/{campaign_id}")
    assert set(records) == set(VINS), json.dumps(shown["counters"])
    assert {r["state"]["S"] for r in records.values()} == {"notified"}

    # When the first vehicle accepts, through the status rule's queue
    first = records[VINS[0]]
    report = OTAStatus(
        vehicle_id=VINS[0],
        update_id=first["update_id"]["S"],
        state=OTAStatus.State.ACCEPTED,
        sequence=1,
    )
    account.publish(
        STATUS,
        rule="ota_status",
        topic=str(Topic(REGION, VINS[0], Domain.OTA, "status")),
        payload=report.SerializeToString(),
    )
    drained = wait_until_empty(account, STATUS)
    # Then the status function moved its record, and nothing was retried
    assert (drained.succeeded, drained.failed, drained.function_errors) == (1, 0, [])
    assert _records(aws_stack, campaign_id)[VINS[0]]["state"]["S"] == "accepted"

    # And the scheduled monitor pass runs over the live campaign
    summary = account.tick(MONITOR)
    assert summary["campaigns"] == 1  # the one in progress, looked at
    assert (summary["stalled"], summary["notified"]) == (0, 0)  # all notified already

    # When the last vehicle is decommissioned through the API
    answer = _call(account, "DELETE", f"/api/v1/vehicles/{VINS[2]}")
    # Then its update is cancelled and its certificate revoked in IoT Core
    assert _records(aws_stack, campaign_id)[VINS[2]]["state"]["S"] == "cancelled"
    certificate_id = answer["certificate"]["certificate_id"]
    description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
    assert description["status"] == "REVOKED"
    # And the bus's `device.deleted` reaches the OTA consumer, which finds nothing left to do
    invoked = account.put_event(VEHICLES_SOURCE, DEVICE_DELETED, {"vehicle_id": VINS[2]})
    assert invoked == [DEVICE_EVENTS]
    assert _records(aws_stack, campaign_id)[VINS[2]]["state"]["S"] == "cancelled"
