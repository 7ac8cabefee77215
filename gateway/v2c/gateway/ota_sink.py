"""OTA notifications over the gateway's own MQTT connection (local stack).

In AWS the handlers publish through the IoT data plane
(`v2c.handlers.ota.iot_sink`); locally the same handlers, running inside the
gateway process, publish through an `OutboundPublisher`: QoS 2, message
expiry 86,400 s, the per-vehicle update id as correlation data, three
attempts with backoff, then the OTA DLQ (SQS) with vehicle, update and
attempts, from where `v2c dlq replay` sends it again. A campaign chunk goes
through `publish_many`: the publisher's window of QoS 2 flows in flight,
each message answered (delivered or dead-lettered) on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from v2c.gateway.publisher import OutboundMessage, OutboundPublisher
from v2c.handlers.ota.notifier import MESSAGE_EXPIRY_S, SinkMessage


def _outbound(m: SinkMessage) -> OutboundMessage:
    return OutboundMessage(
        m.topic,
        m.payload,
        qos=m.qos,
        expiry_s=MESSAGE_EXPIRY_S,
        correlation_data=m.correlation_id.encode(),
        user_properties=(("update_id", str(m.context.get("update_id", ""))),),
        source=m.source,
        context=m.context,
    )


class MqttNotificationSink:
    def __init__(self, publisher: OutboundPublisher) -> None:
        self._publisher = publisher

    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool:
        return self.send_many([SinkMessage(topic, payload, correlation_id, context)])[0]

    def send_many(self, messages: Sequence[SinkMessage]) -> list[bool]:
        outbound = [_outbound(m) for m in messages]
        return [r.delivered for r in self._publisher.publish_many(outbound)]
