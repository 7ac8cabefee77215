"""Dead-letter records of the telemetry handlers, written by the handlers themselves.

Bad data never raises into the gateway: the handler writes the record (the
reason, the precise error, the original payload) and returns. Three shapes:

* a whole message (`message`): an individual sample, or a batch that could
  not be checked or decompressed; payload byte for byte, topic and MQTT 5
  properties as received, `source` the rule that got it, so a replay goes
  back through the same handler;
* a batch some of whose samples failed (`batch_samples`): **one** record for
  the message, never one per sample. The payload is the envelope byte for
  byte, on the batch topic and rule, so a replay goes back through the batch
  handler (which rewrites every sample with idempotent puts). The context
  holds the batch id, every failed index (as ranges: at most the codec's
  sample cap) and the per-sample reasons, the first `MAX_LISTED_FAILURES`
  in full and a count of the rest. One object per sample let a 300-byte
  envelope declaring 65,000 invalid samples cost 65,000 S3 writes.

A store that cannot take the record raises `TransientError`: then nothing
was lost yet, and the gateway's own dead-lettering (which retries until it
succeeds, and does not acknowledge before) takes over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import InvalidField, TransientError, V2CError
from v2c.contract.events import InboundEvent
from v2c.handlers.dlq.store import DeadLetterStore
from v2c.handlers.telemetry.metrics import TelemetryMetrics

QUEUE: Final = "telemetry"
# Per-sample reasons kept in full in a batch's record; the rest are counted.
MAX_LISTED_FAILURES: Final = 20
_MAX_ERROR_CHARS: Final = 200

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SampleFailure:
    """One sample of a batch that was not stored: where, why, and which sink refused it."""

    index: int
    error: V2CError
    sink: str = ""  # "" (the data is invalid), "dynamodb" or "timeseries"

    def to_json(self) -> JsonDict:
        out: JsonDict = {"index": self.index, "reason": self.error.reason, **_field(self.error)}
        if self.sink:
            out["sink"] = self.sink
        out["error"] = str(self.error)[:_MAX_ERROR_CHARS]
        return out


class TelemetryDeadLetters:
    def __init__(
        self, store: DeadLetterStore, metrics: TelemetryMetrics, single_rule: str = "telemetry"
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._single_rule = single_rule

    def message(
        self,
        event: InboundEvent,
        error: V2CError,
        *,
        message_type: str,
        context: JsonDict | None = None,
    ) -> DeadLetterRecord:
        record = DeadLetterRecord.from_error(
            queue=QUEUE,
            direction=Direction.INBOUND,
            source=event.rule,
            topic=str(event.topic),
            payload=event.payload,
            error=error,
            attempts=1,
            properties=event.properties,
            vehicle_id=event.vehicle_id,
            context={**_field(error), **(context or {})},
        )
        self._put(record, event.region, message_type)
        return record

    def unparsed(
        self, *, rule: str, topic: str, payload: bytes, error: V2CError
    ) -> DeadLetterRecord:
        """An event too broken to parse (no topic, bad base64): keep what there is."""
        record = DeadLetterRecord.from_error(
            queue=QUEUE,
            direction=Direction.INBOUND,
            source=rule,
            topic=topic,
            payload=payload,
            error=error,
            attempts=1,
        )
        self._put(record, "unknown", "unparsed")
        return record

    def batch_samples(
        self,
        event: InboundEvent,
        failures: Sequence[SampleFailure],
        *,
        batch_id: str,
        samples: int,
    ) -> DeadLetterRecord:
        """One record for a batch whose `failures` (non-empty) were not stored."""
        ordered = sorted(failures, key=lambda f: f.index)
        reasons = Counter(f.error.reason for f in ordered)
        # The record's reason says what a replay could fix: a failed write
        # (transient) wins over invalid data, then the most frequent one.
        transient = [f for f in ordered if isinstance(f.error, TransientError)]
        pool = transient or ordered
        top = Counter(f.error.reason for f in pool).most_common(1)[0][0]
        first = next(f for f in pool if f.error.reason == top)
        listed = [f.to_json() for f in ordered[:MAX_LISTED_FAILURES]]
        context: JsonDict = {
            "batch_id": batch_id,
            "samples": samples,
            "failed_samples": len(ordered),
            "failed_indices": _ranges(f.index for f in ordered),
            "reasons": dict(sorted(reasons.items())),
            "failures": listed,
            "failures_not_listed": len(ordered) - len(listed),
        }
        record = DeadLetterRecord.from_error(
            queue=QUEUE,
            direction=Direction.INBOUND,
            source=event.rule,
            topic=str(event.topic),
            payload=event.payload,
            error=first.error,
            attempts=1,
            properties=event.properties,
            vehicle_id=event.vehicle_id,
            context=context,
        )
        summary = f"{len(ordered)} of {samples} samples not stored; sample {first.index}: "
        record = replace(record, error=summary + record.error)
        self._put(record, event.region, "batch_samples")
        return record

    def _put(self, record: DeadLetterRecord, region: str, message_type: str) -> None:
        self._store.put(record)
        self._metrics.dlq_messages.labels(
            queue=record.queue, region=region, message_type=message_type, reason=record.reason
        ).inc()


def _field(error: V2CError) -> JsonDict:
    return {"field": error.field} if isinstance(error, InvalidField) else {}


def _ranges(indices: Any) -> list[list[int]]:
    """Sorted indices as [first, last] runs: 1,000 consecutive failures are one pair."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return runs


def failed_indices(record: DeadLetterRecord) -> list[int]:
    """Every sample index a batch record names (for tools and tests)."""
    return [
        i
        for first, last in record.context.get("failed_indices", [])
        for i in range(first, last + 1)
    ]
