"""Two small MQTT 5 clients with one property model: paho (threads) and gmqtt (asyncio).

v2c runs both libraries against the same broker: vehicles speak paho-mqtt,
the gateway speaks gmqtt. `v2c selftest` and the integration tests need each
side to connect, subscribe, publish with MQTT 5 properties and wait for what
arrives, with every wait bounded; these wrappers do exactly that, and leave
the properties to the contract's one codec (`v2c.contract.mqtt_properties`),
so what a test sends is converted exactly as the gateway and the publisher
convert it. They are deliberately thin: not the vehicle's or the gateway's client.
"""

from __future__ import annotations

import asyncio
import queue
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import gmqtt
import paho.mqtt.client as paho
from gmqtt.mqtt.constants import MQTTv50
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from v2c.contract.errors import TransientError
from v2c.contract.mqtt_properties import MqttProperties

# The name the selftest, the round trip and the tests know the contract's codec by.
Mqtt5Properties = MqttProperties

CONTENT_TYPE_PROTOBUF: Final = "application/x-protobuf"
KEEPALIVE_S: Final = 30


class MqttClientError(TransientError):
    """A connect, subscribe, publish or receive did not complete in time or was refused."""

    reason = "mqtt_client_error"


@dataclass(frozen=True)
class ReceivedMessage:
    topic: str
    payload: bytes
    qos: int
    properties: Mqtt5Properties
    received_at: float  # time.monotonic() when the client library handed it over


def _client_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class PahoV5Client:
    """paho-mqtt v2 (callback API 2, MQTT 5) with blocking, bounded waits.

    Callbacks run on paho's network thread; results cross to the caller
    through events and a queue, keyed by packet id where a reply can race the
    call that caused it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.client_id = client_id or _client_id("v2c-paho")
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if tls_context is not None:
            self._client.tls_set_context(tls_context)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._connect_done = threading.Event()  # CONNACK, or the connection lost before it
        self._connect_error: str | None = None
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._suback_ready = threading.Condition()
        self._messages: queue.Queue[ReceivedMessage] = queue.Queue()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._connect_error = f"connect refused: {reason}"
        self._connect_done.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Without this, a broker that drops the connection before CONNACK (a
        # refused client certificate under TLS 1.3) costs a full timeout.
        if not self._connect_done.is_set():
            self._connect_error = f"connection closed before CONNACK: {reason}"
            self._connect_done.set()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._suback_ready:
            self._subacks[mid] = reasons
            self._suback_ready.notify_all()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._messages.put(
            ReceivedMessage(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                properties=Mqtt5Properties.from_paho(getattr(message, "properties", None)),
                received_at=time.monotonic(),
            )
        )

    def connect(self) -> None:
        try:
            self._client.connect(self.host, self.port, keepalive=KEEPALIVE_S, clean_start=True)
        except OSError as exc:
            raise MqttClientError(f"paho cannot reach {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        if not self._connect_done.wait(self.timeout):
            self.disconnect()
            raise MqttClientError(f"paho got no CONNACK from {self.host}:{self.port}")
        if self._connect_error is not None:
            self.disconnect()
            raise MqttClientError(f"paho to {self.host}:{self.port}: {self._connect_error}")

    def subscribe(self, topic_filter: str, qos: int) -> int:
        """Subscribe and wait for the SUBACK; returns the granted QoS."""
        result, mid = self._client.subscribe(topic_filter, qos=qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttClientError(f"paho could not send SUBSCRIBE {topic_filter!r}: {result}")
        with self._suback_ready:
            if not self._suback_ready.wait_for(lambda: mid in self._subacks, self.timeout):
                raise MqttClientError(f"no SUBACK for {topic_filter!r}")
            (reason,) = self._subacks.pop(mid)
        if reason.is_failure:
            raise MqttClientError(f"subscription {topic_filter!r} refused: {reason}")
        return reason.value

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        properties: Mqtt5Properties | None = None,
        *,
        retain: bool = False,
    ) -> None:
        """Publish and wait until the QoS flow completes (PUBACK, or PUBCOMP at QoS 2)."""
        info = self._client.publish(
            topic,
            payload,
            qos=qos,
            retain=retain,
            properties=(properties or Mqtt5Properties()).to_paho(),
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttClientError(f"paho could not publish to {topic!r}: {info.rc}")
        try:
            info.wait_for_publish(self.timeout)
        except RuntimeError as exc:
            raise MqttClientError(f"publish to {topic!r} failed: {exc}") from exc
        if not info.is_published():
            raise MqttClientError(f"publish to {topic!r} not acknowledged in {self.timeout} s")

    def receive(self, within: float | None = None) -> ReceivedMessage:
        """The next message that arrived, waiting at most `within` (default: the client's)."""
        try:
            return self._messages.get(timeout=self.timeout if within is None else within)
        except queue.Empty:
            raise MqttClientError(f"paho client {self.client_id} received nothing") from None

    def disconnect(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.disconnect()


class GmqttV5Client:
    """gmqtt (asyncio, MQTT 5), the gateway's library, with bounded waits."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.client_id = client_id or _client_id("v2c-gmqtt")
        self._ssl = ssl_context
        self._client: Any = gmqtt.Client(self.client_id)
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._subacks: dict[int, asyncio.Future[Sequence[int]]] = {}
        self._messages: asyncio.Queue[ReceivedMessage] = asyncio.Queue()

    def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        self._messages.put_nowait(
            ReceivedMessage(
                topic=topic,
                payload=bytes(payload),
                qos=qos,
                properties=Mqtt5Properties.from_gmqtt(properties),
                received_at=time.monotonic(),
            )
        )
        return 0  # PUBACK/PUBREC reason: success

    def _on_subscribe(
        self, client: Any, mid: int, granted: Sequence[int], properties: dict[str, Any]
    ) -> None:
        waiter = self._subacks.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(granted)

    async def connect(self) -> None:
        try:
            await asyncio.wait_for(
                self._client.connect(
                    self.host,
                    self.port,
                    ssl=self._ssl or False,
                    keepalive=KEEPALIVE_S,
                    version=MQTTv50,
                ),
                self.timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise MqttClientError(f"gmqtt cannot connect to {self.host}:{self.port}") from exc

    async def subscribe(self, topic_filter: str, qos: int) -> int:
        """Subscribe and wait for the SUBACK; returns the granted QoS."""
        waiter: asyncio.Future[Sequence[int]] = asyncio.get_running_loop().create_future()
        mid = self._client.subscribe(topic_filter, qos=qos)
        self._subacks[mid] = waiter  # the SUBACK cannot run before this: same loop
        try:
            (granted,) = await asyncio.wait_for(waiter, self.timeout)
        except TimeoutError:
            raise MqttClientError(f"no SUBACK for {topic_filter!r}") from None
        if granted >= 0x80:
            raise MqttClientError(f"subscription {topic_filter!r} refused: {granted:#x}")
        return int(granted)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        properties: Mqtt5Properties | None = None,
        *,
        retain: bool = False,
    ) -> None:
        """Publish and wait until every outgoing QoS flow of this client has completed.

        gmqtt offers no per-message completion, but it keeps unacknowledged
        QoS 1/2 packets in its persistent storage until PUBACK/PUBCOMP, so an
        empty storage means this publish has completed.
        """
        self._client.publish(
            topic, payload, qos=qos, retain=retain, **(properties or Mqtt5Properties()).to_gmqtt()
        )
        if qos == 0:
            return
        try:
            await asyncio.wait_for(self._client._persistent_storage.wait_empty(), self.timeout)
        except TimeoutError:
            raise MqttClientError(f"publish to {topic!r} not acknowledged") from None

    async def receive(self, within: float | None = None) -> ReceivedMessage:
        """The next message that arrived, waiting at most `within` (default: the client's)."""
        try:
            return await asyncio.wait_for(
                self._messages.get(), self.timeout if within is None else within
            )
        except TimeoutError:
            raise MqttClientError(f"gmqtt client {self.client_id} received nothing") from None

    async def disconnect(self) -> None:
        if self._client.is_connected:
            await self._client.disconnect()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.disconnect()
