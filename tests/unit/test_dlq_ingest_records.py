"""The ingest DLQ's pure parts: a moved SQS message read as a dead-letter record
(reason derived, malformed bodies kept), where a record replays to, the
`INGEST_QUEUES` mapping, and the service replaying through a store that
redrives its own records, bounded per call."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import ConfigurationError, InvalidInput, TransientError
from v2c.contract.events import build_event
from v2c.handlers.dlq import admin
from v2c.handlers.dlq.ingest import (
    EXHAUSTED,
    MALFORMED,
    is_message_id,
    parse_ingest_queues,
    read_message,
    replay_target,
)
from v2c.handlers.dlq.service import DeadLetterService, ReplayStatus
from v2c.handlers.dlq.store import InMemoryDeadLetterStore
from v2c.infra.names import ResourceNames

VIN = "VIN-1HGBH41JXMN109186"
TOPIC = f"v2c/v1/eu-west-1/{VIN}/telemetry/vehicle"
QUEUES = ResourceNames().ingest_queues
MESSAGE_ID = "0b5e8f7c-3a52-4c8e-9d61-2f0a1b2c3d4e"
SENT_MS = 1_800_000_000_000
PAYLOAD = b"\xff\xfe\x00binary"
ARN = "arn:aws:sqs:eu-west-1:123456789012:"


def _body(rule: str | None = "telemetry", **changes: Any) -> str:
    event = build_event(
        rule=rule or "",
        topic=TOPIC,
        payload=PAYLOAD,
        qos=1,
        properties={"content_type": "application/x-protobuf"},
        received_at_ms=SENT_MS - 5,
    )
    if rule is None:
        del event["rule"]
    event.update(changes)
    return json.dumps(event)


def _message(body: str, source_queue: str = "", receives: int = 3) -> dict[str, Any]:
    attributes = {"ApproximateReceiveCount": str(receives), "SentTimestamp": str(SENT_MS)}
    if source_queue:
        attributes["DeadLetterQueueSourceArn"] = ARN + source_queue
    return {"MessageId": MESSAGE_ID, "ReceiptHandle": "h", "Body": body, "Attributes": attributes}


def test_a_moved_event_is_read_as_an_exhausted_record_of_its_rule() -> None:
    record = read_message(_message(_body(), source_queue="v2c-telemetry-ingest"), QUEUES)

    assert (record.queue, record.direction, record.source) == (
        "ingest",
        Direction.INBOUND,
        "telemetry",
    )
    assert (record.topic, record.vehicle_id, record.payload) == (TOPIC, VIN, PAYLOAD)
    assert record.properties == {"content_type": "application/x-protobuf"}
    assert record.reason == EXHAUSTED
    assert "received 3 times" in record.error
    assert "telemetry function's logs" in record.error
    assert (record.attempts, record.first_failed_at, record.last_failed_at) == (3, SENT_MS, SENT_MS)
    assert record.record_id == MESSAGE_ID
    assert record.context["source_queue"] == "v2c-telemetry-ingest"
    assert record.context["received_at"] == SENT_MS - 5


def test_an_event_without_a_rule_takes_the_rule_of_the_queue_sqs_says_it_came_from() -> None:
    record = read_message(_message(_body(rule=None), source_queue="v2c-ota-status-ingest"), QUEUES)

    assert (record.source, record.reason) == ("ota_status", EXHAUSTED)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("not json {", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (_body(rule=None), "names no rule"),
        (_body(payload="***"), "not base64"),
        (_body(topic="elsewhere/x"), ""),
    ],
)
def test_a_body_that_is_no_ingest_event_is_kept_as_a_malformed_record(body: str, why: str) -> None:
    record = read_message(_message(body), QUEUES)

    assert record.reason == MALFORMED
    assert record.payload == body.encode()  # the body itself, nothing lost
    assert why in record.error
    assert "cannot be replayed" in record.error
    assert record.record_id == MESSAGE_ID
    with pytest.raises(InvalidInput, match="cannot be replayed"):
        replay_target(record, QUEUES)


def test_the_target_is_the_source_queue_sqs_kept_else_the_rules_queue() -> None:
    by_rule = read_message(_message(_body("telemetry_batch")), QUEUES)
    # SQS's word wins over the body's rule (a body could be hand-made)
    by_source = read_message(_message(_body("telemetry"), "v2c-ota-status-ingest"), QUEUES)

    assert replay_target(by_rule, QUEUES) == "v2c-telemetry-batch-ingest"
    assert replay_target(by_source, QUEUES) == "v2c-ota-status-ingest"


def test_a_record_from_a_foreign_queue_or_of_an_unknown_rule_is_not_replayed() -> None:
    foreign = read_message(_message(_body(), source_queue="someone-elses-queue"), QUEUES)
    unknown = read_message(_message(_body("billing")), QUEUES)

    with pytest.raises(InvalidInput, match="'someone-elses-queue', which is not an ingest queue"):
        replay_target(foreign, QUEUES)
    with pytest.raises(InvalidInput, match="'billing', which has no ingest queue"):
        replay_target(unknown, QUEUES)


def test_ingest_queues_parse_from_json_and_a_bad_value_is_a_configuration_error() -> None:
    assert parse_ingest_queues(json.dumps(QUEUES)) == QUEUES
    for bad in ("{", "[]", '{"telemetry": 1}', '{"": "q"}'):
        with pytest.raises(ConfigurationError, match="INGEST_QUEUES"):
            parse_ingest_queues(bad)


def test_only_sqs_message_ids_are_looked_for_in_the_ingest_dlq() -> None:
    assert is_message_id(MESSAGE_ID)
    assert not is_message_id("1800000000000-0123456789abcdef")  # the other stores' ids


class SelfRedrivingStore(InMemoryDeadLetterStore):
    """An in-memory ingest DLQ: replays into `sent`, fails while `failing`."""

    def __init__(self) -> None:
        super().__init__("ingest")
        self.sent: list[tuple[str, bytes]] = []
        self.failing = False

    def redrive_target(self, record: DeadLetterRecord) -> str:
        return replay_target(record, QUEUES)

    def redrive(self, record: DeadLetterRecord) -> str:
        target = self.redrive_target(record)
        if self.failing:
            raise TransientError("sqs down")
        self.sent.append((target, record.payload))
        self.delete(record.record_id)
        return target


def _stored(store: SelfRedrivingStore, n: int, body: str | None = None) -> DeadLetterRecord:
    message = _message(body or _body())
    message["MessageId"] = f"{n:08x}-0000-4000-8000-000000000000"
    message["Attributes"]["SentTimestamp"] = str(SENT_MS + n)
    record = read_message(message, QUEUES)
    store.put(record)
    return record


def _service(store: SelfRedrivingStore) -> DeadLetterService:
    def never(record: DeadLetterRecord) -> None:
        raise AssertionError("the store replays its own records")

    return DeadLetterService({"ingest": store}, {d: never for d in Direction})


def test_the_service_replays_through_the_store_and_a_malformed_record_stays() -> None:
    store = SelfRedrivingStore()
    good, bad = _stored(store, 1), _stored(store, 2, body="garbage")

    outcomes = {o.record_id: o for o in _service(store).replay(queue="ingest", replay_all=True)}

    assert outcomes[good.record_id].status is ReplayStatus.REPLAYED
    assert outcomes[good.record_id].detail == "to v2c-telemetry-ingest"
    assert outcomes[bad.record_id].status is ReplayStatus.FAILED
    assert "cannot be replayed" in outcomes[bad.record_id].detail
    assert store.sent == [("v2c-telemetry-ingest", PAYLOAD)]
    assert [r.record_id for r in store.list()] == [bad.record_id]


def test_a_failed_send_leaves_the_record_and_a_dry_run_names_the_target() -> None:
    store = SelfRedrivingStore()
    record = _stored(store, 1)
    service = _service(store)

    store.failing = True
    (failed,) = service.replay(queue="ingest", record_id=record.record_id)
    (dry,) = service.replay(queue="ingest", replay_all=True, dry_run=True)

    assert (failed.status, failed.detail) == (ReplayStatus.FAILED, "sqs down")
    assert (dry.status, dry.detail) == (ReplayStatus.WOULD_REPLAY, "to v2c-telemetry-ingest")
    assert store.get(record.record_id) == record  # untouched
    assert store.sent == []


def test_replay_all_is_bounded_per_call_and_the_admin_answer_says_more_may_remain() -> None:
    store = SelfRedrivingStore()
    for n in range(5):
        _stored(store, n)
    service = _service(store)

    first = admin.handle({"action": "replay", "queue": "ingest", "all": True, "limit": 3}, service)
    rest = admin.handle({"action": "replay", "queue": "ingest", "all": True, "limit": 3}, service)

    assert (len(first["outcomes"]), first["limit_reached"]) == (3, True)
    assert (len(rest["outcomes"]), rest["limit_reached"]) == (2, False)
    assert store.depth() == 0
    with pytest.raises(InvalidInput, match="at least 1"):
        service.replay(queue="ingest", replay_all=True, limit=0)


def test_an_unknown_queue_kind_is_refused_with_the_known_ones() -> None:
    answer = admin.handle({"action": "list", "queue": "billing"}, _service(SelfRedrivingStore()))

    assert (answer["ok"], answer["status"]) == (False, 400)
    assert "unknown queue 'billing'" in answer["detail"]
    assert "ingest" in answer["detail"]


def test_a_summary_of_a_malformed_record_carries_no_body() -> None:
    record = read_message(_message("x" * 1000), QUEUES)

    summary = admin.summary(record)

    assert "payload_b64" not in summary
    assert summary["payload_size"] == 1000
    assert base64.b64decode(record.to_json()["payload_b64"]) == b"x" * 1000
