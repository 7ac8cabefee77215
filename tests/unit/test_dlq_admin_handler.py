"""The dlq_admin Lambda: every action over in-memory stores and fake redrive
paths, and the AWS redrive paths against fake lambda / iot-data clients."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import ConfigurationError, TransientError
from v2c.handlers import dlq_admin
from v2c.handlers.dlq import admin, redrive
from v2c.handlers.dlq import config as dlq_config
from v2c.handlers.dlq.ingest import IngestDeadLetterStore
from v2c.handlers.dlq.service import DeadLetterService
from v2c.handlers.dlq.store import InMemoryDeadLetterStore, S3DeadLetterStore, SqsDeadLetterStore

VIN = "VIN-1HGBH41JXMN109186"
TELEMETRY_TOPIC = f"v2c/v1/eu-west-1/{VIN}/telemetry/vehicle"
OTA_TOPIC = f"v2c/v1/eu-west-1/{VIN}/ota/available"
NOW_MS = 1_800_000_000_000
HOUR_MS = 3_600_000


def _record(
    *, queue: str = "telemetry", age_ms: int = 0, payload: bytes = b"\x00\xff", **kw: Any
) -> DeadLetterRecord:
    inbound = queue == "telemetry"
    return DeadLetterRecord.from_error(
        queue=queue,
        direction=Direction.INBOUND if inbound else Direction.OUTBOUND,
        source="telemetry" if inbound else "outbound",
        topic=TELEMETRY_TOPIC if inbound else OTA_TOPIC,
        payload=payload,
        error=kw.pop("error", RuntimeError("store unavailable")),
        attempts=kw.pop("attempts", 1),
        vehicle_id=VIN,
        now_ms=NOW_MS - age_ms,
        **kw,
    )


class Redrives:
    """Fake redrive paths: remember what was sent, fail while `failing`."""

    def __init__(self) -> None:
        self.sent: list[tuple[Direction, str]] = []
        self.failing = False

    def path(self, direction: Direction) -> Callable[[DeadLetterRecord], None]:
        def redrive(record: DeadLetterRecord) -> None:
            if self.failing:
                raise TransientError("still broken")
            self.sent.append((direction, record.record_id))

        return redrive


@pytest.fixture
def stores() -> dict[str, InMemoryDeadLetterStore]:
    return {name: InMemoryDeadLetterStore(name) for name in ("telemetry", "ota")}


@pytest.fixture
def redrives() -> Redrives:
    return Redrives()


@pytest.fixture
def service(stores: dict[str, InMemoryDeadLetterStore], redrives: Redrives) -> DeadLetterService:
    paths = {d: redrives.path(d) for d in Direction}
    return DeadLetterService(dict(stores), paths, clock=lambda: NOW_MS / 1000)


def call(event: dict[str, Any], service: DeadLetterService) -> dict[str, Any]:
    answer = admin.handle(event, service, clock=lambda: NOW_MS / 1000)
    json.dumps(answer)  # a Lambda answer must serialise
    return answer


def test_list_returns_summaries_without_payloads_filtered_by_since_and_queue(
    stores: dict[str, InMemoryDeadLetterStore], service: DeadLetterService
) -> None:
    old, new = _record(age_ms=5 * HOUR_MS), _record(age_ms=HOUR_MS)
    for record in (old, new):
        stores["telemetry"].put(record)
    stores["ota"].put(_record(queue="ota"))

    answer = call({"action": "list", "queue": "telemetry", "since": "2h"}, service)

    assert answer["ok"] is True
    assert [r["record_id"] for r in answer["records"]] == [new.record_id]
    assert "payload_b64" not in answer["records"][0]
    assert answer["records"][0]["payload_size"] == 2
    assert (answer["count"], answer["truncated"]) == (1, False)


def test_list_stops_at_the_limit_and_says_it_truncated(
    stores: dict[str, InMemoryDeadLetterStore], service: DeadLetterService
) -> None:
    for i in range(5):
        stores["telemetry"].put(_record(age_ms=i))

    answer = call({"action": "list", "limit": 3}, service)

    assert (len(answer["records"]), answer["truncated"]) == (3, True)


def test_list_filters_by_reason(
    stores: dict[str, InMemoryDeadLetterStore], service: DeadLetterService
) -> None:
    stores["telemetry"].put(_record())
    stores["telemetry"].put(_record(error=TransientError("down")))

    answer = call({"action": "list", "reason": "dependency_unavailable"}, service)

    assert [r["reason"] for r in answer["records"]] == ["dependency_unavailable"]


def test_show_returns_the_whole_record_with_payload_bytes_intact(
    stores: dict[str, InMemoryDeadLetterStore], service: DeadLetterService
) -> None:
    record = _record(payload=bytes(range(256)))
    stores["telemetry"].put(record)

    answer = call({"action": "show", "record_id": record.record_id}, service)

    assert base64.b64decode(answer["record"]["payload_b64"]) == bytes(range(256))
    assert DeadLetterRecord.from_json(answer["record"]) == record


def test_show_of_an_unknown_id_is_a_404_answer_not_a_crash(service: DeadLetterService) -> None:
    answer = call({"action": "show", "record_id": "0000000000000-0000000000000000"}, service)

    assert answer == {
        "ok": False,
        "error": "not_found",
        "detail": "no dead-letter record 0000000000000-0000000000000000",
        "status": 404,
    }


def test_replay_all_sends_each_record_its_own_way_and_empties_the_queues(
    stores: dict[str, InMemoryDeadLetterStore], service: DeadLetterService, redrives: Redrives
) -> None:
    inbound, outbound = _record(), _record(queue="ota")
    stores["telemetry"].put(inbound)
    stores["ota"].put(outbound)

    answer = call({"action": "replay", "all": True}, service)

    assert answer["failed"] == 0
    assert {o["status"] for o in answer["outcomes"]} == {"replayed"}
    assert sorted(redrives.sent) == sorted(
        [(Direction.INBOUND, inbound.record_id), (Direction.OUTBOUND, outbound.record_id)]
    )
    assert stores["telemetry"].depth() == stores["ota"].depth() == 0


def test_failed_replay_keeps_the_record_with_one_more_attempt_and_the_new_error(
    stores: dict[str, InMemoryDeadLetterStore], service: DeadLetterService, redrives: Redrives
) -> None:
    record = _record()
    stores["telemetry"].put(record)
    redrives.failing = True

    answer = call({"action": "replay", "record_id": record.record_id}, service)

    assert answer["failed"] == 1
    assert "still broken" in answer["outcomes"][0]["detail"]
    kept = stores["telemetry"].get(record.record_id)
    assert kept.attempts == 2
    assert kept.reason == "dependency_unavailable"
    assert kept.last_failed_at == NOW_MS
    assert kept.payload == record.payload


def test_dry_run_replays_nothing_and_changes_nothing(
    stores: dict[str, InMemoryDeadLetterStore], service: DeadLetterService, redrives: Redrives
) -> None:
    record = _record()
    stores["telemetry"].put(record)

    answer = call({"action": "replay", "all": True, "dry_run": True}, service)

    assert [o["status"] for o in answer["outcomes"]] == ["would_replay"]
    assert redrives.sent == []
    assert list(stores["telemetry"].list()) == [record]


@pytest.mark.parametrize(
    "event",
    [
        {"action": "replay"},
        {"action": "replay", "all": True, "record_id": "x"},
        {"action": "replay", "all": "yes"},
        {"action": "list", "since": "yesterday"},
        {"action": "list", "limit": 0},
        {"action": "list", "queue": "nope"},
        {"action": "purge"},
        {"action": "explode"},
        {},
    ],
)
def test_malformed_requests_are_400_answers(
    event: dict[str, Any], service: DeadLetterService
) -> None:
    answer = call(event, service)

    assert answer["ok"] is False
    assert answer["status"] == 400


def test_purge_needs_confirm_then_deletes_only_older_records(
    stores: dict[str, InMemoryDeadLetterStore], service: DeadLetterService
) -> None:
    old, new = _record(age_ms=8 * 24 * HOUR_MS), _record(age_ms=HOUR_MS)
    for record in (old, new):
        stores["telemetry"].put(record)

    refused = call({"action": "purge", "older_than": "7d"}, service)
    assert refused["ok"] is False
    assert stores["telemetry"].depth() == 2

    answer = call({"action": "purge", "older_than": "7d", "confirm": True}, service)

    assert answer == {"ok": True, "purged": 1}
    assert [r.record_id for r in stores["telemetry"].list()] == [new.record_id]


def test_depths_counts_every_queue(
    stores: dict[str, InMemoryDeadLetterStore], service: DeadLetterService
) -> None:
    stores["ota"].put(_record(queue="ota"))

    assert call({"action": "depths"}, service)["depths"] == {"ota": 1, "telemetry": 0}


def test_lambda_handler_builds_the_service_once_per_container(
    monkeypatch: pytest.MonkeyPatch, service: DeadLetterService
) -> None:
    built: list[int] = []

    def build() -> DeadLetterService:
        built.append(1)
        return service

    dlq_config.SERVICE.build_with(build)
    try:
        for _ in range(2):
            assert dlq_admin.lambda_handler({"action": "depths"}, None)["ok"] is True
    finally:
        dlq_config.SERVICE.build_with(None)
    assert len(built) == 1


# -- the AWS redrive paths -------------------------------------------------------


class FakeLambda:
    def __init__(self, error: str | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def invoke(self, **request: Any) -> dict[str, Any]:
        self.calls.append(request)
        answer: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(b'{"status":"ok"}')}
        if self.error is not None:
            answer["FunctionError"] = "Unhandled"
            answer["Payload"] = io.BytesIO(json.dumps({"errorMessage": self.error}).encode())
        return answer


class FakeIotData:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def publish(self, **request: Any) -> None:
        self.calls.append(request)


def test_inbound_redrive_invokes_the_rules_function_with_the_iot_rule_event() -> None:
    client = FakeLambda()
    record = _record(properties={"content_type": "application/x-protobuf"})

    redrive.LambdaRedriver(client, "v2c-prod-")(record)

    (call_,) = client.calls
    assert call_["FunctionName"] == "v2c-prod-telemetry"
    assert call_["InvocationType"] == "RequestResponse"
    event = json.loads(call_["Payload"])
    assert (event["rule"], event["region"], event["vehicle_id"]) == ("telemetry", "eu-west-1", VIN)
    assert base64.b64decode(event["payload"]) == b"\x00\xff"
    assert event["properties"]["replayed_from"] == record.record_id
    assert event["properties"]["content_type"] == "application/x-protobuf"


def test_inbound_redrive_fails_when_the_function_raised() -> None:
    with pytest.raises(redrive.RemoteHandlerFailed, match="table missing") as caught:
        redrive.LambdaRedriver(FakeLambda(error="table missing"))(_record())
    assert caught.value.reason == "handler_error"


def test_outbound_redrive_publishes_through_iot_data_with_mqtt5_properties_at_qos1() -> None:
    client = FakeIotData()
    props = {
        "message_expiry_interval": 3600,
        "content_type": "application/x-protobuf",
        "correlation_data_b64": base64.b64encode(b"corr").decode(),
        "user_properties": [["message_type", "v2c.v1.OTAUpdateAvailable"]],
    }
    record = _record(queue="ota", properties=props, context={"qos": 2})

    redrive.IotDataRedriver(client)(record)

    assert client.calls == [
        {
            "topic": OTA_TOPIC,
            "qos": 1,  # IoT Core carries QoS 0 and 1 only
            "retain": False,
            "payload": b"\x00\xff",
            "messageExpiry": 3600,
            "contentType": "application/x-protobuf",
            "correlationData": base64.b64encode(b"corr").decode(),
            "userProperties": [{"message_type": "v2c.v1.OTAUpdateAvailable"}],
        }
    ]


def test_build_service_wires_s3_and_sqs_stores_and_the_aws_redrive_paths() -> None:
    made: list[str] = []

    def client(name: str) -> object:
        made.append(name)
        return object()

    env = {
        "TELEMETRY_DLQ_BUCKET": "b",
        "OTA_DLQ_QUEUE_URL": "http://q",
        "INGEST_DLQ_QUEUE_URL": "http://i",
        "INGEST_QUEUES": '{"telemetry": "v2c-telemetry-ingest"}',
    }
    service = dlq_config.build_service(env, client)

    assert service.queues == ["ingest", "ota", "telemetry"]
    assert sorted(made) == ["iot-data", "lambda", "s3", "sqs"]
    assert isinstance(service._stores["telemetry"], S3DeadLetterStore)
    assert isinstance(service._stores["ota"], SqsDeadLetterStore)
    assert isinstance(service._stores["ingest"], IngestDeadLetterStore)
    assert service._stores["ingest"]._queues == {"telemetry": "v2c-telemetry-ingest"}


def test_build_service_without_its_environment_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OTA_DLQ_QUEUE_URL"):
        dlq_config.build_service({"TELEMETRY_DLQ_BUCKET": "b"}, lambda name: object())
