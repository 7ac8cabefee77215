"""DeadLetterService when the store itself fails mid-replay: every record still
gets its outcome, and a record is never reported gone while it is still queued."""

from __future__ import annotations

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import TransientError
from v2c.handlers.dlq.service import DeadLetterService, ReplayStatus
from v2c.handlers.dlq.store import InMemoryDeadLetterStore

TOPIC = "v2c/v1/eu-west-1/VIN-1HGBH41JXMN109186/telemetry/vehicle"


class FlakyStore(InMemoryDeadLetterStore):
    def __init__(self) -> None:
        super().__init__("telemetry")
        self.fail_delete = False
        self.fail_replace = False

    def delete(self, record_id: str) -> None:
        if self.fail_delete:
            raise TransientError("S3 unavailable")
        super().delete(record_id)

    def replace(self, record: DeadLetterRecord) -> None:
        if self.fail_replace:
            raise TransientError("S3 unavailable")
        super().replace(record)


def _record(n: int) -> DeadLetterRecord:
    return DeadLetterRecord.from_error(
        queue="telemetry",
        direction=Direction.INBOUND,
        source="telemetry",
        topic=TOPIC,
        payload=bytes([n]),
        error=RuntimeError("boom"),
        attempts=1,
        now_ms=1_000 + n,
    )


def _ok(record: DeadLetterRecord) -> None:
    return None


def _broken(record: DeadLetterRecord) -> None:
    raise RuntimeError("handler still broken")


def test_handled_record_that_cannot_be_deleted_is_reported_failed_and_stays() -> None:
    store = FlakyStore()
    store.put(_record(1))
    store.fail_delete = True
    service = DeadLetterService({"telemetry": store}, {Direction.INBOUND: _ok})

    (outcome,) = service.replay(replay_all=True)

    assert outcome.status is ReplayStatus.FAILED
    assert "replayed, but not removed" in outcome.detail
    assert store.depth() == 1


def test_failed_replay_whose_attempt_count_cannot_be_stored_keeps_the_old_record() -> None:
    store = FlakyStore()
    record = _record(1)
    store.put(record)
    store.fail_replace = True
    service = DeadLetterService({"telemetry": store}, {Direction.INBOUND: _broken})

    (outcome,) = service.replay(replay_all=True)

    assert outcome.status is ReplayStatus.FAILED
    assert "attempt count not updated" in outcome.detail
    assert store.get(record.record_id) == record


def test_one_failing_record_does_not_stop_the_others() -> None:
    store = FlakyStore()
    records = [_record(n) for n in range(3)]
    for record in records:
        store.put(record)
    poisoned = records[1].record_id

    def redrive(record: DeadLetterRecord) -> None:
        if record.record_id == poisoned:
            raise RuntimeError("bad payload")

    service = DeadLetterService({"telemetry": store}, {Direction.INBOUND: redrive})
    outcomes = service.replay(replay_all=True)

    assert [o.status for o in outcomes] == [
        ReplayStatus.REPLAYED,
        ReplayStatus.FAILED,
        ReplayStatus.REPLAYED,
    ]
    assert [r.record_id for r in store.list()] == [poisoned]
    assert store.get(poisoned).attempts == 2
