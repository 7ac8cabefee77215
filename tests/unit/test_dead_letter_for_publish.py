"""One record builder for a failed publish, either way, with the vehicle read by `Topic.parse`."""

from __future__ import annotations

import pytest

from v2c.contract.dead_letter import DeadLetterRecord, Direction, topic_region
from v2c.contract.errors import HandlerTimeout, TransientError
from v2c.contract.events import InboundEvent, replay_event

VIN = "VIN-1HGBH41JXMN109186"
TOPIC = f"v2c/v1/eu-west-1/{VIN}/ota/available"


def test_an_outbound_publish_records_the_vehicle_region_properties_and_context() -> None:
    props = {"message_expiry_interval": 86_400, "correlation_data_b64": "dS0x"}
    record = DeadLetterRecord.for_publish(
        TOPIC,
        b"\x08\x01",
        queue="ota",
        direction=Direction.OUTBOUND,
        source="ota_notify",
        error=TransientError("not connected"),
        attempts=3,
        properties=props,
        context={"qos": 2, "update_id": "u-1"},
        now_ms=1_800_000_000_000,
    )
    assert (record.vehicle_id, record.region) == (VIN, "eu-west-1")
    assert (record.reason, record.attempts, record.payload) == (
        "dependency_unavailable",
        3,
        b"\x08\x01",
    )
    assert record.properties == props
    assert record.context == {"qos": 2, "update_id": "u-1"}
    assert record.first_failed_at == record.last_failed_at == 1_800_000_000_000
    assert DeadLetterRecord.loads(record.dumps()) == record


def test_an_inbound_failure_records_the_handlers_reason() -> None:
    topic = f"v2c/v1/us-east-1/{VIN}/telemetry/vehicle"
    record = DeadLetterRecord.for_publish(
        topic,
        b"x",
        queue="telemetry",
        direction=Direction.INBOUND,
        source="telemetry",
        error=HandlerTimeout("too slow"),
        attempts=1,
    )
    assert (record.vehicle_id, record.region, record.reason) == (
        VIN,
        "us-east-1",
        "handler_timeout",
    )


@pytest.mark.parametrize(
    "topic", ["", "not/a-topic", f"v2c/v1/eu-west-1/{VIN}/nope/x", "a/b/c/d/e/f"]
)
def test_a_topic_outside_the_scheme_is_kept_with_no_vehicle(topic: str) -> None:
    record = DeadLetterRecord.for_publish(
        topic,
        b"x",
        queue="telemetry",
        direction=Direction.INBOUND,
        source="telemetry",
        error=ValueError("boom"),
        attempts=1,
    )
    assert (record.topic, record.vehicle_id, record.region) == (topic, "", "unknown")
    assert record.reason == "handler_error"
    assert topic_region(topic) == "unknown"


def test_a_replay_event_is_the_first_event_marked_with_its_record() -> None:
    record = DeadLetterRecord.for_publish(
        f"v2c/v1/eu-west-1/{VIN}/ota/status",
        b"\x00\xff",
        queue="ota",
        direction=Direction.INBOUND,
        source="ota_status",
        error=TransientError("x"),
        attempts=1,
        properties={"content_type": "application/x-protobuf", "dup": True},
    )
    event = InboundEvent.parse(replay_event(record, received_at_ms=7))
    assert (event.rule, event.vehicle_id, event.region) == ("ota_status", VIN, "eu-west-1")
    assert (event.payload, event.received_at_ms) == (b"\x00\xff", 7)
    assert event.replay_of == record.record_id
    assert event.content_type == "application/x-protobuf"
    assert event.redelivered
