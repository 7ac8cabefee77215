"""The ingest DLQ as AWS runs it: the template's functions from the built
artifact, with the template's environment and grants' resources, on the real
moto server (`lambda_emulator`). A record the telemetry function fails
`maxReceiveCount` times is moved by SQS to the ingest DLQ; the `dlq_admin`
function lists it and the API function serves it at `/api/v1/dlq/ingest`
(it no longer answers 503: the template gives it the DLQ configuration);
a replay puts the body back onto the telemetry ingest queue, and once the
cause is mended the mapping stores it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lambda_artifact import built_artifact
from telemetry_support import VINS, register_vehicles, stored_per_vehicle

from v2c.infra.aws.resources import ensure_resources
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.local.lambda_emulator import EmulatedAccount, wait_until_empty
from v2c.infra.local.template_functions import read_template
from v2c.vehicle_sim.sampler import TelemetrySampler

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

REGION = "eu-west-1"
TEMPLATE = read_template(TEMPLATE_PATH)
TELEMETRY = TEMPLATE.by_handler("v2c.handlers.telemetry_ingest.lambda_handler").logical_id
DLQ_ADMIN = TEMPLATE.by_handler("v2c.handlers.dlq_admin.lambda_handler").logical_id
OPERATOR = {"sub": "olga-sub", "cognito:username": "olga", "cognito:groups": "operator"}
VIEWER = {"sub": "victor-sub", "cognito:username": "victor", "cognito:groups": "viewer"}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_artifact(tmp_path_factory)


@pytest.fixture
def account(aws_stack: AwsStack, artifact: Path, tmp_path: Path) -> Iterator[EmulatedAccount]:
    with EmulatedAccount(TEMPLATE, artifact, aws_stack.aws, tmp_path / "logs") as emulated:
        yield emulated


def test_an_exhausted_record_is_listed_served_and_replayed_by_the_deployed_functions(
    account: EmulatedAccount, aws_stack: AwsStack
) -> None:
    # Given a sample the function can neither store nor dead-letter itself
    register_vehicles(aws_stack, VINS[:1])
    sample = TelemetrySampler(VINS[0], seed=3).samples(1)[0]
    topic = f"v2c/v1/{REGION}/{VINS[0]}/telemetry/vehicle"
    message_id = account.publish(
        TELEMETRY, rule="telemetry", topic=topic, payload=sample.SerializeToString()
    )
    names = aws_stack.names
    aws_stack.aws.client("dynamodb").delete_table(TableName=names.telemetry_table)
    aws_stack.aws.client("s3").delete_bucket(Bucket=names.telemetry_dlq_bucket)
    assert wait_until_empty(account, TELEMETRY).succeeded == 0
    (body,) = account.queue_bodies("IngestDlq")

    # When the operator looks: the admin function and the API both see it
    listed: Any = account.invoke(DLQ_ADMIN, {"action": "list", "queue": "ingest"})
    status, _, answer = account.api("GET", "/api/v1/dlq/ingest", claims=OPERATOR)
    refused, _, _ = account.api("GET", "/api/v1/dlq/ingest", claims=VIEWER)

    assert listed["ok"], listed
    (record,) = listed["records"]
    assert (record["record_id"], record["source"]) == (message_id, "telemetry")
    assert (record["reason"], record["vehicle_id"], record["topic"]) == (
        "exhausted_receives",
        VINS[0],
        topic,
    )
    assert status == 200, answer
    assert [item["record_id"] for item in json.loads(answer)["items"]] == [message_id]
    assert refused == 403

    # When the cause is mended and the record replayed through the admin function
    ensure_resources(aws_stack.aws, names)
    replayed: Any = account.invoke(DLQ_ADMIN, {"action": "replay", "queue": "ingest", "all": True})

    # Then it went back onto its ingest queue byte for byte, left the DLQ, and is stored
    assert replayed["ok"], replayed
    assert [(o["status"], o["detail"]) for o in replayed["outcomes"]] == [
        ("replayed", f"to {names.telemetry_ingest_queue}")
    ]
    assert account.queue_bodies("TelemetryQueue") == [body]
    assert account.queue_bodies("IngestDlq") == []
    assert wait_until_empty(account, TELEMETRY).succeeded == 1
    assert stored_per_vehicle(aws_stack, VINS[:1]) == {VINS[0]: 1}
    depths: Any = account.invoke(DLQ_ADMIN, {"action": "depths"})
    assert depths["depths"] == {"ingest": 0, "ota": 0, "telemetry": 0}
