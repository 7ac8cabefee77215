"""Cloud → vehicle publishes (OTA notifications, rollbacks, commands).

QoS 2 with message expiry, correlation data, content type and user
properties; up to 3 attempts with exponential backoff; when all fail, the
message becomes an outbound dead-letter record that `v2c dlq replay` sends
again. paho-mqtt is used here (not gmqtt) because its `wait_for_publish`
tells us when the QoS 2 flow completed, which is what "published" means.

`publish_many` pipelines: it keeps up to `window` QoS 2 flows in flight
(never more than the broker's Receive Maximum, which mosquitto sets from
its `max_inflight_messages`) instead of waiting for each PUBCOMP before the
next PUBLISH, so a campaign chunk costs about one round trip per window,
not one per vehicle. Each message keeps the single path's guarantees on its
own: the ones not completed are tried again (the same attempts and backoff
as `publish`, in rounds over whatever is still failing) and then
dead-lettered one record each; the answer is per message.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
from aws_lambda_powertools import Logger
from paho.mqtt.enums import CallbackAPIVersion
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import TransientError
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.contract.mqtt_properties import MqttProperties
from v2c.gateway.metrics import GatewayMetrics
from v2c.handlers.dlq.store import DeadLetterStore

logger = Logger(service="v2c-publisher")

JsonDict = dict[str, Any]

# QoS 2 flows one `publish_many` keeps in flight: the local mosquitto's
# Receive Maximum (`max_inflight_messages 100`), and small enough that paho,
# which walks its whole outgoing dict on every acknowledgement, stays cheap.
DEFAULT_WINDOW: Final = 100


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message of `publish_many`, with what `publish` takes per message."""

    topic: str
    payload: bytes
    qos: int = 2
    expiry_s: int | None = 86_400
    content_type: str | None = "application/x-protobuf"
    correlation_data: bytes | None = None
    user_properties: Sequence[tuple[str, str]] = ()
    source: str = "outbound"
    context: JsonDict | None = None

    def props(self) -> JsonDict:
        return MqttProperties(
            message_expiry_interval=self.expiry_s,
            content_type=self.content_type,
            correlation_data=self.correlation_data,
            user_properties=tuple((str(k), str(v)) for k, v in self.user_properties),
        ).to_json()


class _StillFailing(Exception):
    """Some messages of a `publish_many` round were not delivered (tenacity retries the round)."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    delivered: bool
    attempts: int
    dead_letter_id: str | None = None
    error: str = ""


class OutboundPublisher:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        dead_letters: DeadLetterStore | None,
        *,
        metrics: GatewayMetrics | None = None,
        attempts: int = 3,
        backoff_s: float = 0.5,
        ack_timeout_s: float = 5.0,
        window: int = DEFAULT_WINDOW,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self._endpoint = endpoint
        self._sleep = sleep  # the backoff's clock: tests observe the waits through it
        self._dead_letters = dead_letters
        self._metrics = metrics or GatewayMetrics()
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._ack_timeout_s = ack_timeout_s
        self._window = window
        self._receive_maximum = window  # the broker's, from its CONNACK
        self._connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        # paho's own limit (it queues beyond it) bounds every thread's
        # publishes together; `publish_many` keeps its window inside it.
        client.max_inflight_messages_set(window)
        context = endpoint.ssl_context()
        if context is not None:
            client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client = client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            self._receive_maximum = int(getattr(props, "ReceiveMaximum", 65_535) or 65_535)
            self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected.clear()

    def start(self, wait_s: float = 10.0) -> None:
        """Connect in the background; returns once connected or after `wait_s`
        (publishing while the broker is down retries, then dead-letters)."""
        self._client.connect_async(self._endpoint.host, self._endpoint.port, keepalive=30)
        self._client.loop_start()
        self._connected.wait(wait_s)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _attempt(self, topic: str, payload: bytes, qos: int, props: JsonDict) -> None:
        if not self._connected.is_set():
            raise TransientError("not connected to the broker")
        properties = MqttProperties.from_json(props).to_paho()
        info = self._client.publish(topic, payload, qos=qos, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransientError(f"publish refused: {mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(self._ack_timeout_s)
        except RuntimeError as exc:  # paho raises when the connection drops meanwhile
            raise TransientError(f"publish interrupted: {exc}") from exc
        if not info.is_published():
            raise TransientError(f"no acknowledgement within {self._ack_timeout_s}s")

    def try_publish(self, topic: str, payload: bytes, *, qos: int, props: JsonDict) -> int:
        """Publish with retries; returns the attempts used or raises the last error."""
        used = 0
        for attempt in Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff_s, max=10),
            retry=retry_if_exception_type(TransientError),
            reraise=True,
            sleep=self._sleep,
        ):
            with attempt:
                used = attempt.retry_state.attempt_number
                self._attempt(topic, payload, qos, props)
        return used

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 2,
        expiry_s: int | None = 86_400,
        content_type: str | None = "application/x-protobuf",
        correlation_data: bytes | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
        source: str = "outbound",
        context: JsonDict | None = None,
    ) -> PublishResult:
        message = OutboundMessage(
            topic,
            payload,
            qos,
            expiry_s,
            content_type,
            correlation_data,
            user_properties,
            source,
            context,
        )
        props = message.props()
        try:
            attempts = self.try_publish(topic, payload, qos=qos, props=props)
        except TransientError as exc:
            return self._failed(message, props, exc)
        self._metrics.published.labels(source).inc()
        return PublishResult(True, attempts)

    def publish_many(self, messages: Sequence[OutboundMessage]) -> list[PublishResult]:
        """Publish every message with up to the window's QoS 2 flows in
        flight; one result per message, in order. A round publishes what is
        still undelivered; between rounds the same backoff as `publish`;
        after the last attempt each one left is dead-lettered on its own."""
        props = [m.props() for m in messages]
        results: list[PublishResult | None] = [None] * len(messages)
        pending = list(range(len(messages)))
        errors: dict[int, TransientError] = {}
        used = 0
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=self._backoff_s, max=10),
                retry=retry_if_exception_type(_StillFailing),
                reraise=True,
                sleep=self._sleep,
            ):
                with attempt:
                    used = attempt.retry_state.attempt_number
                    errors = self._round([(i, messages[i], props[i]) for i in pending])
                    for index in pending:
                        if index not in errors:
                            results[index] = PublishResult(True, used)
                            self._metrics.published.labels(messages[index].source).inc()
                    pending = [i for i in pending if i in errors]
                    if pending:
                        raise _StillFailing(f"{len(pending)} of {len(messages)} undelivered")
        except _StillFailing:
            for index in pending:
                results[index] = self._failed(messages[index], props[index], errors[index])
        return [r for r in results if r is not None]

    def _round(
        self, batch: Sequence[tuple[int, OutboundMessage, JsonDict]]
    ) -> dict[int, TransientError]:
        """One attempt at each message of `batch`, up to the window in flight
        at once (the oldest settled before another is issued); the errors of
        those not completed, by index."""
        errors: dict[int, TransientError] = {}
        in_flight: deque[tuple[int, mqtt.MQTTMessageInfo, float]] = deque()
        window = max(1, min(self._window, self._receive_maximum))

        def settle() -> None:
            index, info, deadline = in_flight.popleft()
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                if not info.is_published():
                    errors[index] = TransientError(
                        f"no acknowledgement within {self._ack_timeout_s}s"
                    )
            except (RuntimeError, ValueError) as exc:  # the connection dropped meanwhile
                errors[index] = TransientError(f"publish interrupted: {exc}")

        for index, message, props in batch:
            if not self._connected.is_set():
                errors[index] = TransientError("not connected to the broker")
                continue
            info = self._client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                properties=MqttProperties.from_json(props).to_paho(),
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                errors[index] = TransientError(f"publish refused: {mqtt.error_string(info.rc)}")
                continue
            in_flight.append((index, info, time.monotonic() + self._ack_timeout_s))
            if len(in_flight) >= window:
                settle()
        while in_flight:
            settle()
        return errors

    def _failed(self, message: OutboundMessage, props: JsonDict, exc: Exception) -> PublishResult:
        """Count a message whose attempts all failed and dead-letter it."""
        self._metrics.publish_failures.labels(message.source).inc()
        record_id = self._dead_letter(
            message.topic, message.payload, props, exc, message.source, message.context
        )
        return PublishResult(False, self._attempts, record_id, str(exc))

    def _dead_letter(
        self,
        topic: str,
        payload: bytes,
        props: JsonDict,
        exc: Exception,
        source: str,
        context: JsonDict | None,
    ) -> str | None:
        if self._dead_letters is None:
            return None
        record = DeadLetterRecord.for_publish(
            topic,
            payload,
            queue=self._dead_letters.name,
            direction=Direction.OUTBOUND,
            source=source,
            error=exc,
            attempts=self._attempts,
            properties=props,
            context={"qos": 2, **(context or {})},
            now_ms=int(time.time() * 1000),
        )
        self._dead_letters.put(record)
        self._metrics.dlq_messages.labels(
            queue=self._dead_letters.name,
            region=record.region,
            message_type=source,
            reason=record.reason,
        ).inc()
        logger.warning(
            "publish failed; dead-lettered",
            extra={"topic": topic, "record_id": record.record_id, "error": str(exc)},
        )
        return record.record_id
