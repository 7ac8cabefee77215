"""The vehicle's MQTT 5 connection (paho-mqtt v2): identity, session, reconnects.

One network thread owns the connection and runs paho's `loop()` itself
instead of `loop_forever()`, because the reconnect schedule is ours
(`backoff.py`: jitter, quota windows), not paho's fixed doubling. The client
connects as the vehicle: client id = VIN, X.509 client certificate, clean
start false with a session expiry, so the broker keeps the vehicle's session
(subscriptions, queued commands) across short outages.

Every connection gets a *new* paho client object and a generation number.
That is deliberate: paho resends its own unacknowledged messages after a
reconnect, with the properties they first had, and a message first sent as
"alias 1, empty topic" would reach a broker that no longer knows alias 1 (MQTT
5 aliases die with the connection), a protocol error. The publisher resends
from its buffer through the new connection instead, and every callback carries
the generation, so a late PUBACK of an old connection is recognised as stale.

Callbacks run on the network thread and must not block: the listener only
queues them. `publish` is called from the publisher's thread.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from v2c.contract.topics import Domain, Topic, validate_region, validate_vin
from v2c.vehicle_sim.backoff import Backoff, BackoffPolicy
from v2c.vehicle_sim.delivery import SessionLimits
from v2c.vehicle_sim.sampler import SCHEMA_VERSION
from v2c.vehicle_sim.topic_alias import TopicAliases

logger = logging.getLogger(__name__)

CONTENT_TYPE_PROTOBUF: Final = "application/x-protobuf"
CONTENT_TYPE_PROTOBUF_ZSTD: Final = "application/x-protobuf+zstd"
TELEMETRY_KINDS: Final = ("vehicle", "batch", "heartbeat")


@dataclass(frozen=True, slots=True)
class VehicleIdentity:
    """Who the vehicle is on the wire: client id, topics, user properties."""

    vehicle_id: str
    region: str
    vehicle_model: str = "unknown"
    firmware_version: str = "0.0.0"
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        validate_vin(self.vehicle_id)
        validate_region(self.region)

    def telemetry_topic(self, kind: str) -> str:
        return str(Topic(self.region, self.vehicle_id, Domain.TELEMETRY, kind))

    @property
    def user_properties(self) -> tuple[tuple[str, str], ...]:
        return (
            ("schema_version", self.schema_version),
            ("vehicle_model", self.vehicle_model),
            ("firmware_version", self.firmware_version),
        )


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    host: str
    port: int
    ca_file: Path | None = None  # None: plain TCP (tests); else mutual TLS
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 300  # the spec's action item: 5 min, not 40 (plus the heartbeat)
    session_expiry_s: int = 3600
    connect_timeout_s: float = 30.0  # TCP + TLS + CONNACK
    max_packet_size: int = 128 * 1024  # what this vehicle accepts from the broker
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    loop_interval_s: float = 0.05  # how often the network thread looks at its flags

    def tls_context(self) -> ssl.SSLContext | None:
        """Mutual TLS: the broker is checked against the CA, the vehicle shows its certificate."""
        if self.ca_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


@dataclass(frozen=True, slots=True)
class PublishProperties:
    content_type: str
    user_properties: tuple[tuple[str, str], ...] = ()


class ConnectionListener(Protocol):
    """Told about the connection from the network thread; must return at once."""

    def connection_up(self, generation: int, limits: SessionLimits) -> None: ...

    def connection_down(self, generation: int, reason_code: int | None) -> None: ...

    def puback(self, generation: int, mid: int, reason_code: int) -> None: ...


@dataclass(slots=True)
class ConnectionCounters:
    attempts: int = 0
    connects: int = 0
    failures: int = 0
    last_refusal: int | None = None  # CONNACK reason code of the last refused attempt
    alias_only_publishes: int = 0  # PUBLISHes that carried a topic alias and no topic


@dataclass(eq=False)
class _Session:
    generation: int
    client: paho.Client
    aliases: TopicAliases | None = None
    up: bool = False
    refused: int | None = None
    disconnect_reason: int | None = None
    drop: bool = False


class VehicleConnection:
    def __init__(
        self,
        identity: VehicleIdentity,
        config: ConnectionConfig,
        listener: ConnectionListener,
        *,
        aliased_topics: Iterable[str] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.identity = identity
        self.config = config
        self.counters = ConnectionCounters()
        self._listener = listener
        self._aliased = frozenset(
            aliased_topics
            if aliased_topics is not None
            else (identity.telemetry_topic(kind) for kind in TELEMETRY_KINDS)
        )
        self._backoff = Backoff(config.backoff, random)
        self._tls = config.tls_context()
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-{identity.vehicle_id}", daemon=True
        )

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Disconnect cleanly (the session stays on the broker) and stop the thread."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def is_connected(self) -> bool:
        session = self._session
        return session is not None and session.up

    # -- called by the publisher -------------------------------------------
    def publish(
        self, generation: int, topic: str, payload: bytes, properties: PublishProperties
    ) -> int | None:
        """Send at QoS 1 on connection `generation`; the packet id, or None if it is gone."""
        with self._lock:
            session = self._session
            if session is None or not session.up or session.generation != generation:
                return None
            assert session.aliases is not None
            wire_topic, alias = session.aliases.resolve(topic)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = properties.content_type
            if properties.user_properties:
                props.UserProperty = list(properties.user_properties)
            if alias is not None:
                props.TopicAlias = alias
            info = session.client.publish(wire_topic, payload, qos=1, properties=props)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                session.drop = True  # the socket failed under us: start over
                return None
            if not wire_topic:
                self.counters.alias_only_publishes += 1
            return info.mid

    def drop(self, generation: int) -> None:
        """Close connection `generation` without a DISCONNECT: its link is presumed dead."""
        with self._lock:
            session = self._session
            if session is not None and session.generation == generation:
                session.drop = True

    # -- the network thread ------------------------------------------------
    def _run(self) -> None:
        generation = 0
        while not self._closing.is_set():
            generation += 1
            self.counters.attempts += 1
            try:
                session = self._connect_and_serve(generation)
            except Exception:  # never let the uplink thread die
                logger.exception("connection %s failed unexpectedly", generation)
                session = None
            if self._closing.is_set():
                break
            refused = None if session is None else session.refused
            if session is not None and session.up:
                self._backoff.succeeded()
            else:
                self.counters.failures += 1
                if refused is not None:
                    self.counters.last_refusal = refused
            delay = self._backoff.failed(refused)
            logger.info(
                "%s: reconnecting in %.2f s (attempt %d, refusal %s)",
                self.identity.vehicle_id,
                delay,
                self._backoff.attempts,
                refused,
            )
            self._closing.wait(delay)

    def _new_client(self, session_holder: list[_Session]) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.identity.vehicle_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(0)  # our window is the limit (FIELD_NOTES)
        client.max_queued_messages_set(0)
        client.connect_timeout = self.config.connect_timeout_s
        if self._tls is not None:
            client.tls_set_context(self._tls)

        def on_connect(c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
            session = session_holder[0]
            if rc.is_failure:
                session.refused = int(rc.value)
                return
            limits = SessionLimits(
                receive_maximum=int(getattr(props, "ReceiveMaximum", 65_535)),
                maximum_packet_size=getattr(props, "MaximumPacketSize", None),
                topic_alias_maximum=int(getattr(props, "TopicAliasMaximum", 0)),
            )
            session.aliases = TopicAliases(limits.topic_alias_maximum, self._aliased)
            session.up = True
            self.counters.connects += 1
            self._listener.connection_up(session.generation, limits)

        def on_disconnect(c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
            session = session_holder[0]
            if flags.is_disconnect_packet_from_server:  # e.g. 0x95 packet too large
                session.disconnect_reason = int(rc.value)

        def on_publish(c: Any, u: Any, mid: int, rc: ReasonCode, props: Any) -> None:
            self._listener.puback(session_holder[0].generation, mid, int(rc.value))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.MaximumPacketSize = self.config.max_packet_size
        props.RequestProblemInformation = 1
        props.UserProperty = [
            ("vehicle_model", self.identity.vehicle_model),
            ("firmware_version", self.identity.firmware_version),
        ]
        return props

    def _connect_and_serve(self, generation: int) -> _Session:
        holder: list[_Session] = []
        client = self._new_client(holder)
        session = _Session(generation, client)
        holder.append(session)
        with self._lock:
            self._session = session
        try:
            try:
                client.connect(
                    self.config.host,
                    self.config.port,
                    keepalive=self.config.keepalive_s,
                    clean_start=False,
                    properties=self._connect_properties(),
                )
            except (OSError, ValueError) as exc:  # refused, unreachable, TLS failure, timeout
                logger.info("%s: connect failed: %s", self.identity.vehicle_id, exc)
                return session
            self._serve(session)
            return session
        finally:
            with self._lock:
                self._session = None
            self._close_client(session)
            if session.up:
                self._listener.connection_down(generation, session.disconnect_reason)

    def _serve(self, session: _Session) -> None:
        deadline = time.monotonic() + self.config.connect_timeout_s
        while not self._closing.is_set() and not session.drop:
            rc = session.client.loop(timeout=self.config.loop_interval_s)
            if session.refused is not None or rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            if not session.up and time.monotonic() > deadline:
                logger.info("%s: no CONNACK in time", self.identity.vehicle_id)
                return

    def _close_client(self, session: _Session) -> None:
        client = session.client
        if self._closing.is_set() and session.up and not session.drop:
            client.disconnect()  # graceful: the broker keeps the session until it expires
        sock = client.socket()
        if sock is not None:
            sock.close()  # a dead link gets no DISCONNECT: close the socket, as the spec says
