"""Every function of `template.yaml`, run from the built Lambda artifact in an
interpreter of its own, with the environment the template gives it and the
event shapes AWS sends, against the real moto server (`lambda_emulator`).

What the gateway and API tests cannot show: that the artifact alone runs
each function (nothing of the development tree or the venv on its path),
that the template's environment is all a function needs, that a handler
error reaches the dead-letter queue through the queue's redrive policy (no
silent drop), that the Cognito authorizer's claims carry the API's roles,
and that the scheduled monitor pass runs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lambda_artifact import built_artifact
from telemetry_support import VINS, register_vehicles, stored_per_vehicle

from v2c.contract.batch_codec import encode_envelope
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.local.lambda_emulator import EmulatedAccount, wait_until_empty
from v2c.infra.local.lambda_runtime import interpreter_sees_only
from v2c.infra.local.template_functions import read_template
from v2c.vehicle_sim.sampler import TelemetrySampler

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

REGION = "eu-west-1"
TEMPLATE = read_template(TEMPLATE_PATH)
TELEMETRY = TEMPLATE.by_handler("v2c.handlers.telemetry_ingest.lambda_handler").logical_id
BATCH = TEMPLATE.by_handler("v2c.handlers.telemetry_batch.lambda_handler").logical_id
API = TEMPLATE.by_handler("v2c.handlers.ota_api.lambda_handler").logical_id
MONITOR = TEMPLATE.by_handler("v2c.handlers.ota_monitor.lambda_handler").logical_id
FLEET_MANAGER = {"sub": "alice-sub", "cognito:username": "alice", "cognito:groups": "fleet_manager"}
VIEWER = {"sub": "victor-sub", "cognito:username": "victor", "cognito:groups": "viewer"}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_artifact(tmp_path_factory)


@pytest.fixture
def account(aws_stack: AwsStack, artifact: Path, tmp_path: Path) -> Iterator[EmulatedAccount]:
    with EmulatedAccount(TEMPLATE, artifact, aws_stack.aws, tmp_path / "logs") as emulated:
        yield emulated


def _topic(vin: str, kind: str) -> str:
    return f"v2c/v1/{REGION}/{vin}/telemetry/{kind}"


def _logs(account: EmulatedAccount) -> str:
    return "\n".join(p.read_text() for p in sorted(account.log_dir.glob("*.log")))


def test_every_function_loads_from_the_artifact_alone(
    account: EmulatedAccount, artifact: Path
) -> None:
    # Given every function the template deploys
    assert len(TEMPLATE.functions) >= 5
    for logical in TEMPLATE.functions:
        # When its container starts (the handler imported, as at a cold start)
        process = account.process(logical)
        # Then its interpreter saw the artifact and the standard library only
        assert interpreter_sees_only(process.sys_path, artifact) == [], logical
        assert TEMPLATE.function(logical).code_uri.rstrip("/").endswith("build/lambda")


def test_telemetry_singles_and_a_batch_are_stored_through_their_queues(
    account: EmulatedAccount, aws_stack: AwsStack
) -> None:
    # Given two registered vehicles, three singles each and one batch of 25 for the first
    register_vehicles(aws_stack, VINS[:2])
    drives = {vin: TelemetrySampler(vin, seed=7).samples(28) for vin in VINS[:2]}
    for vin, samples in drives.items():
        for sample in samples[:3]:
            account.publish(
                TELEMETRY,
                rule="telemetry",
                topic=_topic(vin, "vehicle"),
                payload=sample.SerializeToString(),
            )
    batch = drives[VINS[0]][3:]
    account.publish(
        BATCH,
        rule="telemetry_batch",
        topic=_topic(VINS[0], "batch"),
        payload=encode_envelope(batch),
    )
    # When the mappings hand the queues to the functions
    singles = wait_until_empty(account, TELEMETRY)
    batches = wait_until_empty(account, BATCH)
    # Then every record succeeded once and every sample is stored
    assert (singles.succeeded, singles.failed, singles.function_errors) == (6, 0, [])
    assert (batches.succeeded, batches.failed, batches.function_errors) == (1, 0, [])
    assert stored_per_vehicle(aws_stack, VINS[:2]) == {VINS[0]: 28, VINS[1]: 3}


def test_a_malformed_sample_is_dead_lettered_by_the_function_with_its_payload(
    account: EmulatedAccount, aws_stack: AwsStack
) -> None:
    # Given a registered vehicle's message that is not a Telemetry protobuf
    register_vehicles(aws_stack, VINS[:1])
    garbage = b"\xff\x00 not protobuf \xfe"
    account.publish(TELEMETRY, rule="telemetry", topic=_topic(VINS[0], "vehicle"), payload=garbage)
    # When the mapping hands it to the function
    report = wait_until_empty(account, TELEMETRY)
    # Then the record is handled (not retried): one dead letter holds the original bytes
    assert (report.succeeded, report.failed) == (1, 0)
    s3 = aws_stack.aws.client("s3")
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=aws_stack.names.telemetry_dlq_bucket).get("Contents", [])
    ]
    assert len(keys) == 1, keys
    record = json.loads(
        s3.get_object(Bucket=aws_stack.names.telemetry_dlq_bucket, Key=keys[0])["Body"].read()
    )
    assert base64.b64decode(record["payload_b64"]) == garbage
    assert record["reason"]


def test_a_handler_error_is_redriven_to_the_ingest_dlq_never_dropped(
    account: EmulatedAccount, aws_stack: AwsStack
) -> None:
    # Given a valid sample while both its table and the function's dead-letter
    # bucket are gone: the function can neither store it nor dead-letter it
    register_vehicles(aws_stack, VINS[:1])
    sample = TelemetrySampler(VINS[0], seed=9).samples(1)[0]
    message_id = account.publish(
        TELEMETRY,
        rule="telemetry",
        topic=_topic(VINS[0], "vehicle"),
        payload=sample.SerializeToString(),
    )
    aws_stack.aws.client("dynamodb").delete_table(TableName=aws_stack.names.telemetry_table)
    s3 = aws_stack.aws.client("s3")
    s3.delete_bucket(Bucket=aws_stack.names.telemetry_dlq_bucket)
    # When the mapping delivers it until the queue's redrive policy gives up
    report = wait_until_empty(account, TELEMETRY)
    # Then it failed maxReceiveCount times and now waits in the ingest DLQ, intact
    queue = next(
        q
        for q in TEMPLATE.of_type("AWS::SQS::Queue")
        if q.startswith("Telemetry") and "Batch" not in q
    )
    max_receives = TEMPLATE.resources[queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    assert report.succeeded == 0
    assert report.failed == max_receives
    dead = account.queue_bodies("IngestDlq")
    assert len(dead) == 1
    assert json.loads(dead[0])["topic"] == _topic(VINS[0], "vehicle")
    assert message_id  # the same message, moved by SQS, not re-sent by anyone


def test_the_api_answers_only_through_its_cognito_authorizer(account: EmulatedAccount) -> None:
    # An anonymous call is refused by the gateway before the function runs
    status, _, body = account.api("GET", "/api/v1/ota/campaigns")
    assert (status, json.loads(body)) == (401, {"message": "Unauthorized"})
    # The health check is public
    status, _, _ = account.api("GET", "/health")
    assert status == 200
    # A viewer's claims read but do not write
    status, _, body = account.api("GET", "/api/v1/ota/campaigns", claims=VIEWER)
    assert status == 200, body
    status, _, body = account.api(
        "POST",
        "/api/v1/ota/campaigns",
        claims=VIEWER,
        body=b'{"name": "x"}',
        headers=[("Content-Type", "application/json")],
    )
    assert status == 403, body
    assert json.loads(body)["reason"] == "forbidden"


def test_the_scheduled_monitor_pass_runs(account: EmulatedAccount) -> None:
    # When the schedule rule fires
    answer: Any = account.tick(MONITOR)
    # Then the pass completes and says what it looked at: nothing, on an empty stack
    assert {k: answer[k] for k in ("campaigns", "notified", "stalled", "planned")} == {
        "campaigns": 0,
        "notified": 0,
        "stalled": 0,
        "planned": 0,
    }


def test_the_api_registers_vehicles_only_in_the_stacks_vehicle_regions(
    aws_stack: AwsStack, artifact: Path, tmp_path: Path
) -> None:
    # Given a stack deployed with VehicleRegions=eu-west-1
    with EmulatedAccount(
        TEMPLATE, artifact, aws_stack.aws, tmp_path / "logs", VehicleRegions="eu-west-1"
    ) as account:
        for region, expected in (("us-east-1", 400), ("eu-west-1", 200)):
            # When a fleet manager registers a vehicle (inventory only) in a region
            body = {"vehicle_id": VINS[0], "model": "Accord", "region": region, "year": 2024}
            status, _, answer = account.api(
                "POST",
                "/api/v1/vehicles",
                claims=FLEET_MANAGER,
                body=json.dumps(body).encode(),
                headers=[("Content-Type", "application/json")],
            )
            # Then only the deployment's region is taken
            assert status in ((expected,) if expected == 400 else (200, 201)), answer
        assert "eu-west-1" in answer.decode()


def test_a_user_in_no_group_is_refused_by_the_function(account: EmulatedAccount) -> None:
    # Cognito let the user in (valid token), but the user holds no v2c role
    nobody = {"sub": "nora-sub", "cognito:username": "nora"}
    status, _, body = account.api("GET", "/api/v1/ota/campaigns", claims=nobody)
    assert status == 403, body
    assert json.loads(body)["reason"] == "forbidden"
