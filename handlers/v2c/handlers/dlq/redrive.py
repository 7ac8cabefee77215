"""The AWS paths a dead-letter record is replayed through (the `dlq_admin` Lambda).

An inbound record goes back to the Lambda function of the rule that failed
it (`RULE_FUNCTION_PREFIX` + rule name), with the event an IoT topic rule
sends (`v2c.contract.events.replay_event`, the one writer of that event); an
outbound record is published again through IoT Core's `iot-data` API with the
MQTT 5 properties it kept, at QoS 1 (IoT Core's highest). The gateway's
redrivers (`v2c.gateway.redrive`) are the local counterparts.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.dead_letter import DeadLetterRecord
from v2c.contract.errors import V2CError
from v2c.contract.events import replay_event
from v2c.contract.mqtt_properties import MqttProperties
from v2c.handlers.aws_errors import translate


class RemoteHandlerFailed(V2CError):
    """The rule's Lambda function ran and raised: the record stays queued."""

    reason = "handler_error"


class LambdaRedriver:
    """Inbound records: invoke the rule's function synchronously; a function
    error or an AWS error fails this record's replay."""

    def __init__(self, client: Any, function_prefix: str = "v2c-") -> None:
        self._lambda = client
        self._prefix = function_prefix

    def __call__(self, record: DeadLetterRecord) -> None:
        function = f"{self._prefix}{record.source}"
        # Received when it first failed: the handler's latency metrics then
        # show the replay's delay instead of hiding it.
        event = replay_event(record, received_at_ms=record.first_failed_at)
        try:
            answer = self._lambda.invoke(
                FunctionName=function,
                InvocationType="RequestResponse",
                Payload=json.dumps(event).encode(),
            )
        except (BotoCoreError, ClientError) as exc:
            raise translate(f"invoking {function}", exc) from exc
        if answer.get("FunctionError"):
            body = answer["Payload"].read().decode(errors="replace")
            raise RemoteHandlerFailed(f"{function} failed: {body[:500]}")


class IotDataRedriver:
    """Outbound records: publish through IoT Core with the properties the record kept."""

    def __init__(self, client: Any) -> None:
        self._iot = client

    def __call__(self, record: DeadLetterRecord) -> None:
        properties = MqttProperties.from_json(record.properties)
        try:
            self._iot.publish(
                topic=record.topic,
                qos=min(int(record.context.get("qos", 1)), 1),
                retain=False,
                payload=record.payload,
                **properties.to_iot_data(),
            )
        except (BotoCoreError, ClientError) as exc:
            raise translate(f"publishing to {record.topic}", exc) from exc
