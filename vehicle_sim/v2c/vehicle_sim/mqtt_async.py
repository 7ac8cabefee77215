"""A vehicle's one MQTT 5 session on asyncio (gmqtt): thousands of them on one event loop.

A paho client runs a network thread per connection, fine for one vehicle and
wrong for a fleet: a thousand vehicles would be a thousand threads. This
session is a gmqtt client, a protocol object on the shared event loop, as the
gateway uses it, and it carries everything a vehicle says: OTA (QoS 2, below)
and telemetry (`telemetry_publisher`, through `send`). What OTA needs:

* a persistent session: clean start false and a session expiry (one hour by
  default), so notifications published while the vehicle was offline wait
  at the broker, and subscriptions survive reconnects;
* QoS 2 both ways. Inbound, `optimistic_acknowledgement=False`: the PUBREC
  goes out only after the message handler returned, i.e. after the update
  agent persisted its decision, so a crash before that makes the broker
  deliver again. Outbound, `publish` returns a future that resolves when the
  broker finished the exchange (PUBCOMP for QoS 2, PUBACK for QoS 1);
* mutual TLS with the vehicle's own certificate (CN = vehicle id) when the
  target has a CA, plain TCP otherwise (a test broker); what a TLS session
  costs in memory and what is shared between vehicles: `tls_memory`.

gmqtt does not return packet ids from `publish`; `_Deliveries` is its
in-flight store (the `persistent_storage` hook) and learns the id as the
packet is stored, and the end of the exchange as it is removed. Messages
published while offline wait in an ordered outbox and leave on the next
CONNACK; if the broker lost the session (no session present), gmqtt drops
its in-flight store, and those messages go back to the outbox.

Telemetry needs something else (`send`): a QoS 1 PUBLISH on *this*
connection only, outside gmqtt's in-flight store, so gmqtt never replays it
after a reconnect. The telemetry buffer is the store: its publisher sends
again from the buffer through the new connection, whose topic aliases are
new (MQTT 5 aliases die with the connection, and a replayed "alias 1, empty
topic" would reach a broker that no longer knows alias 1). It also needs the
PUBACK's reason code (0x10 "no matching subscribers" means hold and retry),
which gmqtt drops; the session reads it from the packet and tells its
listeners, together with the CONNACK's limits and a DISCONNECT's reason.

Connecting retries with the vehicle backoff (2, 4, ... s plus jitter) until
it succeeds or the caller cancels; after a loss gmqtt reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from gmqtt import Client as GmqttClient
from gmqtt import Message, Subscription
from gmqtt.storage import PersistentStorage

from v2c.contract.mqtt_properties import MqttProperties
from v2c.vehicle_sim.backoff import Backoff, BackoffPolicy
from v2c.vehicle_sim.delivery import SessionLimits
from v2c.vehicle_sim.metrics import SIM_METRICS
from v2c.vehicle_sim.tls_memory import client_context, share_read_buffer
from v2c.vehicle_sim.topic_alias import TopicAliases

logger = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], Awaitable[None]]
CONNECT_TIMEOUT_S: Final = 30.0
NO_PROPERTIES: Final = MqttProperties()


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """Where the broker is, and (for mTLS) the vehicle's certificate."""

    host: str
    port: int
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 60
    session_expiry_s: int = 3600
    connect_timeout_s: float = CONNECT_TIMEOUT_S  # TCP + TLS + CONNACK

    @property
    def uses_tls(self) -> bool:
        return self.ca_file is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca_file is None:
            return None
        return client_context(self.ca_file, self.cert_file, self.key_file)


class SessionListener(Protocol):
    """Told about the connection on the loop; must return at once."""

    def connection_up(self, limits: SessionLimits) -> None: ...

    def connection_down(self, reason_code: int | None) -> None: ...

    def puback(self, mid: int, reason_code: int) -> None: ...


@dataclass(slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    done: asyncio.Future[bool]


class _Deliveries(PersistentStorage):  # type: ignore[misc]
    """gmqtt's in-flight store, watched: which packet id carries which message."""

    def __init__(self, on_lost: Callable[[list[_Outgoing]], None]) -> None:
        super().__init__()
        self._tracked: dict[int, _Outgoing] = {}
        self._capturing = False
        self._captured: int | None = None
        self._on_lost = on_lost

    def capture(self) -> None:
        self._capturing, self._captured = True, None

    def captured(self) -> int | None:
        self._capturing = False
        return self._captured

    def track(self, mid: int, message: _Outgoing) -> None:
        self._tracked[mid] = message

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if self._capturing and mid not in self._tracked:
            self._captured = mid

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        message = self._tracked.pop(mid, None)
        if message is not None and not message.done.done():
            message.done.set_result(True)

    def clear(self) -> None:
        super().clear()
        lost = list(self._tracked.values())
        self._tracked.clear()
        if lost:
            self._on_lost(lost)

    @property
    def in_flight(self) -> int:
        return len(self._tracked)


class AsyncMqttSession:
    """One vehicle's session. Create, `await connect()`, `publish(...)`, `await close()`."""

    def __init__(
        self,
        client_id: str,
        target: MqttTarget,
        *,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: MessageHandler | None = None,
        backoff: BackoffPolicy | None = None,
        reconnect_delay_s: float = 2.0,
        aliased_topics: Iterable[str] = (),
    ) -> None:
        self.client_id = client_id
        self.target = target
        self._subscriptions = tuple(subscriptions)
        self._handler = on_message
        # The process's random source for the jitter: a `random.Random` per
        # vehicle would cost 2.5 KiB each for nothing a shared one lacks.
        self._backoff = Backoff(
            backoff or BackoffPolicy(initial_s=1.0, max_s=30.0), random=random.random
        )
        self._reconnect_delay_s = reconnect_delay_s
        self._outbox: deque[_Outgoing] = deque()
        self._deliveries = _Deliveries(self._requeue)
        self._client: Any = None
        self._connected = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._closing = False
        self._listeners: list[SessionListener] = []
        self._aliased = frozenset(aliased_topics)
        self._aliases: TopicAliases | None = None
        self._volatile: set[int] = set()  # packet ids of `send`s awaiting their PUBACK
        self.connects = 0
        self.disconnects = 0
        self.received = 0
        self.alias_only_publishes = 0  # PUBLISHes that carried a topic alias and no topic

    def add_listener(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def connect(self) -> None:
        """Connect (retrying with backoff until it works or the caller cancels)."""
        context = self.target.ssl_context() or False
        while True:
            client = GmqttClient(
                self.client_id,
                clean_session=False,
                optimistic_acknowledgement=False,
                persistent_storage=self._deliveries,
                session_expiry_interval=self.target.session_expiry_s,
                logger=logging.getLogger("gmqtt"),
            )
            client.set_config({"reconnect_retries": -1, "reconnect_delay": self._reconnect_delay_s})
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
            self._watch_pubacks(client)
            self._client = client
            try:
                await asyncio.wait_for(
                    client.connect(
                        self.target.host,
                        self.target.port,
                        ssl=context,
                        keepalive=self.target.keepalive_s,
                    ),
                    timeout=self.target.connect_timeout_s,
                )
            except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
                SIM_METRICS.connect_failure.inc()
                delay = self._backoff.failed()
                logger.debug("%s: connect failed (%s); retry in %.1fs", self.client_id, exc, delay)
                await self._drop(client)
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # gmqtt's MQTTConnectError: a refused CONNACK
                SIM_METRICS.connect_failure.inc()
                delay = self._backoff.failed(getattr(exc, "_code", None))
                logger.warning(
                    "%s: connection refused (%s); retry in %.1fs", self.client_id, exc, delay
                )
                await self._drop(client)
                await asyncio.sleep(delay)
                continue
            self._backoff.succeeded()
            if self._subscriptions:
                # "Connected" means able to receive: the SUBACK is back, so a
                # notification published from now on reaches this vehicle.
                try:
                    await asyncio.wait_for(self._subscribed.wait(), timeout=CONNECT_TIMEOUT_S)
                except TimeoutError:
                    logger.warning("%s: no SUBACK within %ss", self.client_id, CONNECT_TIMEOUT_S)
            return

    async def reconnect(self, offline: Callable[[], Awaitable[None]] | None = None) -> None:
        """Close this connection, keeping the session, and connect again with
        the target's certificate and key read afresh (a rotated identity).

        The same client id with clean start false: the broker resumes the
        session, its subscriptions, and delivers what it queued for it
        meanwhile (QoS 1/2); what this side had not sent waits in the outbox.
        `offline` runs while there is no connection (tests publish then).
        """
        client = self._client
        if client is not None:
            await self._drop(client)  # still `self._client`: `_on_disconnect` tells the listeners
        self._client = None
        self._connected.clear()
        if offline is not None:
            await offline()
        await self.connect()

    async def close(self) -> None:
        """Disconnect (the broker keeps the session for `session_expiry_s`)."""
        self._closing = True
        client, self._client = self._client, None
        self._connected.clear()
        if client is not None:
            await self._drop(client)
        for message in [*self._outbox]:
            if not message.done.done():
                message.done.cancel()
        self._outbox.clear()

    @staticmethod
    async def _drop(client: Any) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), timeout=5)
        except Exception as exc:  # already gone, or the broker is down: nothing to do
            logger.debug("disconnect: %s", exc)

    # -- publishing ----------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 2) -> asyncio.Future[bool]:
        """Send now if connected, else at the next connection. The future
        resolves True when the broker acknowledged (QoS 0: when written)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        message = _Outgoing(topic, payload, qos, done)
        if self.connected and not self._outbox:
            self._send(message)
        else:
            self._outbox.append(message)
        return done

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged (outbox and in flight)."""
        return len(self._outbox) + self._deliveries.in_flight

    def _send(self, message: _Outgoing) -> bool:
        client = self._client
        if client is None or message.done.done():
            return message.done.done()
        self._deliveries.capture()
        try:
            client.publish(message.topic, message.payload, qos=message.qos)
        except Exception as exc:  # the transport went away under us: keep it for later
            self._deliveries.captured()
            logger.debug("%s: publish failed (%s); queued", self.client_id, exc)
            self._outbox.appendleft(message)
            return False
        mid = self._deliveries.captured()
        if message.qos == 0 or mid is None:
            message.done.set_result(True)
        else:
            self._deliveries.track(mid, message)
        return True

    def _flush(self) -> None:
        while self._outbox and self.connected:
            if not self._send(self._outbox.popleft()):
                break

    def _requeue(self, lost: list[_Outgoing]) -> None:
        """The broker lost the session: send what it never acknowledged again, first."""
        logger.info("%s: session lost; %d message(s) sent again", self.client_id, len(lost))
        self._outbox.extendleft(reversed(lost))

    # -- sending outside the in-flight store (telemetry) ----------------------

    def send(
        self, topic: str, payload: bytes, properties: MqttProperties = NO_PROPERTIES
    ) -> int | None:
        """PUBLISH at QoS 1 on the current connection, never replayed by gmqtt.

        Returns the packet id its PUBACK will name (to the listeners), or None
        when there is no connection or no free packet id; the caller keeps the
        message and sends it again later.
        """
        client = self._client
        if client is None or not self.connected:
            return None
        aliases = self._aliases
        wire_topic, alias = aliases.resolve(topic) if aliases is not None else (topic, None)
        kwargs = properties.to_gmqtt()
        if alias is not None:
            kwargs["topic_alias"] = alias  # per connection: not a message property
        message = Message(wire_topic, payload, qos=1, **kwargs)
        try:
            # gmqtt's `Client.publish` would also store the packet for replay;
            # the connection's own `publish` only numbers and writes it.
            mid, _ = client._connection.publish(message)
        except Exception as exc:  # no packet id left, or the transport is gone
            logger.debug("%s: send failed (%s)", self.client_id, exc)
            if alias is not None and wire_topic:
                self._aliases = None  # the broker never saw this mapping: no aliases until later
            return None
        self._volatile.add(mid)
        if not wire_topic:
            self.alias_only_publishes += 1
        return int(mid)

    def drop(self) -> None:
        """Close the connection without a DISCONNECT: its link is presumed dead
        (PUBACKs stopped while TCP looks fine); gmqtt reconnects."""
        connection = getattr(self._client, "_connection", None)
        transport = getattr(connection, "_transport", None)
        if transport is not None:
            transport.abort()

    def _watch_pubacks(self, client: Any) -> None:
        """Read the PUBACK reason code gmqtt parses away (it keeps only the id)."""
        handler = client._package_handler
        handle = handler._handle_puback_packet

        def on_puback(cmd: int, packet: bytes) -> None:
            handle(cmd, packet)
            (mid,) = struct.unpack("!H", packet[:2])
            if mid in self._volatile:
                self._volatile.discard(mid)
                reason_code = packet[2] if len(packet) > 2 else 0
                for listener in self._listeners:
                    listener.puback(mid, reason_code)

        handler._handle_puback_packet = on_puback

    def _forget_volatile(self, client: Any) -> None:
        """The connection is gone and no PUBACK will come for what `send` wrote
        on it: give the packet ids back (gmqtt frees an id only on its PUBACK)."""
        if not self._volatile:
            return
        ids = client._package_handler.id_generator
        for mid in self._volatile:
            ids.free_id(mid)
        self._volatile.clear()

    # -- gmqtt callbacks -----------------------------------------------------

    def _on_connect(self, client: Any, flags: int, rc: int, properties: Any) -> None:
        self.connects += 1
        SIM_METRICS.connect_success.inc()
        self._connected.set()
        if self.target.uses_tls:  # every (re)connect is a new transport
            connection = getattr(client, "_connection", None)
            share_read_buffer(getattr(connection, "_transport", None))
        # The broker's own values: gmqtt merges our CONNECT properties over them.
        connack = client._package_handler._connack_properties
        limits = SessionLimits(
            receive_maximum=_first(connack, "receive_maximum", 65_535),
            maximum_packet_size=_first(connack, "maximum_packet_size", None),
            topic_alias_maximum=_first(connack, "topic_alias_maximum", 0),
        )
        self._aliases = TopicAliases(limits.topic_alias_maximum, self._aliased)
        for listener in self._listeners:
            listener.connection_up(limits)
        if self._subscriptions:
            client.subscribe([Subscription(topic, qos=qos) for topic, qos in self._subscriptions])
        # After gmqtt's replay of its in-flight store (scheduled before this
        # callback), so a report never overtakes an older one.
        asyncio.get_running_loop().call_soon(self._flush)

    def _on_subscribe(self, client: Any, mid: int, granted: Any, properties: Any) -> None:
        codes = tuple(granted) if isinstance(granted, (tuple, list)) else (granted,)
        if any(isinstance(code, int) and code >= 0x80 for code in codes):
            logger.warning("%s: subscription refused %s", self.client_id, codes)
        self._subscribed.set()

    def _on_disconnect(self, client: Any, packet: Any, exc: BaseException | None = None) -> None:
        if client is not self._client:
            return
        was_up = self._connected.is_set()
        self._connected.clear()
        self._aliases = None
        self._forget_volatile(client)
        if not self._closing:
            self.disconnects += 1
            logger.debug("%s: disconnected (%s)", self.client_id, exc)
        if was_up:
            # A DISCONNECT from the broker carries its reason (0x95: packet too large).
            reason = packet[0] if isinstance(packet, (bytes, bytearray)) and packet else None
            for listener in self._listeners:
                listener.connection_down(reason)

    async def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        self.received += 1
        if self._handler is not None:
            try:
                await self._handler(topic, bytes(payload))
            except Exception:  # a bug must not turn into a redelivery loop
                logger.exception("%s: handling a message on %s failed", self.client_id, topic)
        return 0  # PUBACK / PUBREC success, sent by gmqtt now


def _first(properties: dict[str, Any], name: str, default: Any) -> Any:
    """gmqtt parses every property into a list of its values."""
    values = properties.get(name)
    if not values:
        return default
    return values[0] if isinstance(values, list) else values
