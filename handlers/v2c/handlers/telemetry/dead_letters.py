"""Dead-letter records of the telemetry handlers, written by the handlers themselves.

Bad data never raises into the gateway: the handler writes the record (the
reason, the precise error, the original payload) and returns. Three shapes:

* a whole message (`message`): an individual sample, or a batch that could
  not be checked or decompressed; payload byte for byte, topic and MQTT 5
  properties as received, `source` the rule that got it, so a replay goes
  back through the same handler;
* one sample of a batch (`batch_sample`): the sample alone, serialized as a
  `Telemetry` message, addressed to the individual topic and rule, with the
  batch id and index in the context. A replay stores it through the
  individual path, without re-sending its 24 siblings.

A store that cannot take the record raises `TransientError`: then nothing
was lost yet, and the gateway's own dead-lettering (which retries until it
succeeds, and does not acknowledge before) takes over.
"""

from __future__ import annotations

from typing import Any, Final

from v2c.contract.errors import InvalidField, V2CError
from v2c.contract.topics import Domain, Topic
from v2c.handlers.dlq.record import DeadLetterRecord, Direction
from v2c.handlers.dlq.store import DeadLetterStore
from v2c.handlers.telemetry.events import InboundEvent
from v2c.handlers.telemetry.metrics import TelemetryMetrics
from v2c.v1 import telemetry_pb2

QUEUE: Final = "telemetry"
PROTOBUF: Final = "application/x-protobuf"

JsonDict = dict[str, Any]


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

    def batch_sample(
        self,
        event: InboundEvent,
        sample: telemetry_pb2.Telemetry,
        *,
        batch_id: str,
        index: int,
        error: V2CError,
        sink: str = "",
    ) -> DeadLetterRecord:
        topic = Topic(event.region, event.vehicle_id, Domain.TELEMETRY, "vehicle")
        context: JsonDict = {
            **_field(error),
            "batch_id": batch_id,
            "index": index,
            "batch_topic": str(event.topic),
        }
        if sink:
            context["sink"] = sink
        record = DeadLetterRecord.from_error(
            queue=QUEUE,
            direction=Direction.INBOUND,
            source=self._single_rule,
            topic=str(topic),
            payload=sample.SerializeToString(),
            error=error,
            attempts=1,
            properties={"content_type": PROTOBUF},
            vehicle_id=event.vehicle_id,
            context=context,
        )
        self._put(record, event.region, "batch_sample")
        return record

    def _put(self, record: DeadLetterRecord, region: str, message_type: str) -> None:
        self._store.put(record)
        self._metrics.dlq_messages.labels(
            queue=record.queue, region=region, message_type=message_type, reason=record.reason
        ).inc()


def _field(error: V2CError) -> JsonDict:
    return {"field": error.field} if isinstance(error, InvalidField) else {}
