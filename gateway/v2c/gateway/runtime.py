"""The gateway process: one gmqtt client on shared subscriptions, dispatching
each message to the handlers of the rules it matches.

Delivery contract (at-least-once, nothing lost):
* gmqtt runs with `optimistic_acknowledgement=False` and an async `on_message`,
  so the PUBACK/PUBREC for a QoS 1/2 message is sent only when `on_message`
  returns, i.e. after every matching handler returned or its failure was
  written to the dead-letter queue. A kill -9 before that leaves the message
  unacknowledged in the broker's persistent session: it is redelivered.
* If the DLQ itself cannot be written, the message is not acknowledged; the
  write is retried with backoff. Receive Maximum caps the messages in flight,
  so a slow store or DLQ slows the vehicles down instead of growing memory.
* A handler exception, a malformed payload or a timeout is dead-lettered and
  never stops the gateway.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from gmqtt import Client as MqttClient
from gmqtt import Subscription
from prometheus_client import Counter, Histogram
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from v2c.contract.errors import HandlerTimeout, TransientError
from v2c.gateway.connection import MqttEndpoint
from v2c.gateway.event import LambdaContext, build_event, properties_to_json
from v2c.gateway.metrics import GatewayMetrics
from v2c.gateway.rules import Handler, Rule, load_handler, match_rules
from v2c.gateway.workers import HandlerPool
from v2c.handlers.dlq.metrics import topic_region
from v2c.handlers.dlq.record import DeadLetterRecord, Direction
from v2c.handlers.dlq.store import DeadLetterStore

logger = Logger(service="v2c-gateway")

# Topics seen are cached with the rules they match; past this many distinct
# topics (vehicles x kinds) the cache starts over rather than grow unbounded.
ROUTE_CACHE_SIZE = 65_536


def default_client_id() -> str:
    return f"v2c-gateway-{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class GatewayConfig:
    endpoint: MqttEndpoint
    # Stable per gateway instance: a restarted gateway resumes its persistent
    # session and receives what it had not acknowledged.
    client_id: str = field(default_factory=default_client_id)
    share_group: str = "v2c"
    receive_maximum: int = 64
    workers: int = 16
    session_expiry_s: int = 3600
    keepalive_s: int = 30
    drain_timeout_s: float = 10.0


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        rules: Sequence[Rule],
        dead_letters: Mapping[str, DeadLetterStore],
        metrics: GatewayMetrics | None = None,
    ) -> None:
        missing = {r.dlq for r in rules} - set(dead_letters)
        if missing:
            raise ValueError(f"no dead-letter store for {sorted(missing)}")
        self.config = config
        self.rules = tuple(rules)
        self.dead_letters = dead_letters
        self.metrics = metrics or GatewayMetrics()
        self._handlers: dict[str, Handler] = {r.name: load_handler(r.handler) for r in rules}
        self._pool = HandlerPool(config.workers, name="v2c-handler")
        self._client: Any = None
        # Per-message work is hoisted here: the metric children of each rule
        # (a `labels()` lookup takes a lock and hashes the labels every call)
        # and the rules each topic matches.
        self._rule_metrics = {r.name: _RuleMetrics.of(self.metrics, r.name) for r in rules}
        self._routes: dict[str, tuple[Rule, ...]] = {}
        # Receive Maximum, enforced here as well: mosquitto 2.0.11 (Debian 12)
        # overruns it once messages queue for a client: each PUBACK refills the
        # window by more than one message (measured: 1,600+ unacknowledged
        # messages delivered at a Receive Maximum of 64; docs/benchmarks.md).
        # Messages past the window wait here, unacknowledged, before a handler
        # (and its store) sees them.
        self._window = asyncio.Semaphore(config.receive_maximum)
        self._unacked = 0  # received, not yet acknowledged: in flight + waiting
        self._in_flight = 0  # inside the window: being handled
        self._max_in_flight = 0
        self._max_waiting = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._connected = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        client = MqttClient(
            cfg.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=cfg.session_expiry_s,
            receive_maximum=cfg.receive_maximum,
        )
        # Reconnect forever, quickly: the broker restarting is routine.
        client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        ssl_context: Any = cfg.endpoint.ssl_context() or False
        await client.connect(
            cfg.endpoint.host, cfg.endpoint.port, ssl=ssl_context, keepalive=cfg.keepalive_s
        )
        await asyncio.wait_for(self._connected.wait(), timeout=30)
        logger.info("gateway started", extra={"client_id": cfg.client_id, "rules": len(self.rules)})

    def _on_connect(self, client: Any, flags: int, rc: int, properties: Any) -> None:
        self._connected.set()
        self.metrics.connected.set(1)
        # Subscribing on every (re)connect is idempotent and covers a broker
        # that lost its state.
        subs = [
            Subscription(f"$share/{self.config.share_group}/{rule.topic_filter}", qos=rule.qos)
            for rule in self.rules
        ]
        client.subscribe(subs)

    def _on_disconnect(self, client: Any, packet: Any, exc: BaseException | None = None) -> None:
        self._connected.clear()
        self.metrics.connected.set(0)
        logger.warning("gateway disconnected from broker", extra={"error": str(exc or "")})

    async def stop(self) -> None:
        """Drain: wait for in-flight messages to be acknowledged, then disconnect."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.config.drain_timeout_s)
        except TimeoutError:
            logger.warning("drain timed out", extra={"unacknowledged": self._unacked})
        if self._client is not None:
            await self._client.disconnect()
        self._pool.shutdown()
        self.metrics.connected.set(0)

    async def wait_connected(self) -> None:
        await self._connected.wait()

    @property
    def in_flight(self) -> int:
        """Messages being handled now: never more than Receive Maximum."""
        return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most messages ever handled at once (the high-water mark of `in_flight`)."""
        return self._max_in_flight

    @property
    def max_waiting(self) -> int:
        """The most messages ever received beyond Receive Maximum (a broker overrunning it)."""
        return self._max_waiting

    # -- message path ------------------------------------------------------
    async def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        self._unacked += 1
        self._idle.clear()
        try:
            if self._window.locked():
                self._max_waiting = max(self._max_waiting, self._unacked - self._in_flight)
            async with self._window:
                self._in_flight += 1
                if self._in_flight > self._max_in_flight:
                    self._max_in_flight = self._in_flight
                self.metrics.in_flight.inc()
                try:
                    await self._route(topic, payload, qos, properties)
                finally:
                    self._in_flight -= 1
                    self.metrics.in_flight.dec()
            return 0  # PUBACK / PUBREC success, sent by gmqtt now
        finally:
            self._unacked -= 1
            if self._unacked == 0:
                self._idle.set()

    async def _route(
        self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> None:
        rules = self._routes.get(topic)
        if rules is None:
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            rules = self._routes[topic] = tuple(match_rules(self.rules, topic))
        if not rules:
            self.metrics.unrouted.inc()
            logger.warning("no rule for topic", extra={"topic": topic})
        props = properties_to_json(properties)
        received = int(time.time() * 1000)
        for rule in rules:
            await self._dispatch(rule, topic, payload, qos, props, received)

    async def _dispatch(
        self,
        rule: Rule,
        topic: str,
        payload: bytes,
        qos: int,
        props: dict[str, Any],
        received: int,
    ) -> None:
        metrics = self._rule_metrics[rule.name]
        metrics.received.inc()
        started = time.perf_counter()
        try:
            event = build_event(
                rule=rule.name,
                topic=topic,
                payload=payload,
                qos=qos,
                properties=props,
                received_at_ms=received,
            )
            context = LambdaContext(
                function_name=rule.name,
                timeout_s=rule.timeout_s,
                log_stream_name=self.config.client_id,
            )
            try:
                # asyncio.timeout: one timer, no extra future or callbacks as in wait_for.
                async with asyncio.timeout(rule.timeout_s):
                    await self._pool.submit(self._handlers[rule.name], event, context)
            except TimeoutError:
                raise HandlerTimeout(f"handler {rule.handler} exceeded {rule.timeout_s}s") from None
        except Exception as exc:
            await self._dead_letter(rule, topic, payload, props, exc)
        else:
            metrics.handled.inc()
        finally:
            metrics.latency.observe(time.perf_counter() - started)

    async def _dead_letter(
        self, rule: Rule, topic: str, payload: bytes, props: dict[str, Any], exc: Exception
    ) -> None:
        vehicle_id = topic.split("/")[3] if topic.count("/") >= 3 else ""
        record = DeadLetterRecord.from_error(
            queue=rule.dlq,
            direction=Direction.INBOUND,
            source=rule.name,
            topic=topic,
            payload=payload,
            error=exc,
            attempts=1,
            properties=props,
            vehicle_id=vehicle_id,
        )
        self.metrics.failed.labels(rule.name, record.reason).inc()
        logger.warning(
            "handler failed; dead-lettering",
            extra={"rule": rule.name, "topic": topic, "reason": record.reason, "error": str(exc)},
        )
        store = self.dead_letters[rule.dlq]
        # Not acknowledged until this succeeds: retry for as long as it takes.
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, max=30),
            retry=retry_if_exception_type(TransientError),
            reraise=True,
        ):
            with attempt:
                try:
                    await self._pool.submit(store.put, record)
                except TransientError:
                    self.metrics.dlq_write_failures.labels(rule.dlq).inc()
                    raise
        self.metrics.dlq_messages.labels(
            queue=rule.dlq,
            region=topic_region(topic),
            message_type=rule.name,
            reason=record.reason,
        ).inc()


@dataclass(frozen=True, slots=True)
class _RuleMetrics:
    received: Counter
    handled: Counter
    latency: Histogram

    @classmethod
    def of(cls, metrics: GatewayMetrics, rule: str) -> _RuleMetrics:
        return cls(
            received=metrics.received.labels(rule),
            handled=metrics.handled.labels(rule),
            latency=metrics.latency.labels(rule),
        )


async def run_gateway(gateway: Gateway, stop: asyncio.Event) -> None:
    """Run until `stop` is set (SIGTERM/SIGINT in the CLI), then drain."""
    await gateway.start()
    try:
        await stop.wait()
    finally:
        await gateway.stop()
