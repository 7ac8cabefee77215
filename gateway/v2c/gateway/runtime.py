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

Bounded work and fairness between vehicles (docs/architecture.md):
* `FairScheduler` admits at most `receive_maximum` messages to handling, at
  most `per_vehicle_in_flight` of one vehicle, and hands freed slots round
  robin to the vehicles with waiting messages, each vehicle's in arrival
  order. One vehicle's flood waits in its own queue (unacknowledged: never
  lost) instead of in front of everyone else's messages.
* A handler that outlives its rule's timeout is given up: its message is
  dead-lettered once as `handler_timeout` (payload kept) and acknowledged,
  its slot is freed, and the pool puts a new worker in place of the thread
  the call still holds (`HandlerPool.abandon`). A late result is dropped.
* Dead-letter writes run on their own small pool, so handlers that hang
  (or a full handler pool) never keep a failure from being recorded and
  acknowledged.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aws_lambda_powertools import Logger
from gmqtt import Client as MqttClient
from gmqtt import Subscription
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import HandlerTimeout, TransientError
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.contract.mqtt_properties import MqttProperties
from v2c.gateway.batcher import DeadLetter, PendingRecord, RuleBatcher
from v2c.gateway.event import LambdaContext, event_payload
from v2c.gateway.metrics import GatewayMetrics
from v2c.gateway.routes import Route, RuleMetrics
from v2c.gateway.rules import (
    BATCH_SIZE,
    EventSource,
    Handler,
    Rule,
    load_handler,
    match_rules,
)
from v2c.gateway.scheduler import FairScheduler
from v2c.gateway.workers import HandlerPool, expire
from v2c.handlers.dlq.store import DeadLetterStore

logger = Logger(service="v2c-gateway")

# Topics seen are cached with the rules they match (and each rule's event
# head for the topic); past this many distinct topics (vehicles x kinds) the
# cache starts over rather than grow unbounded.
ROUTE_CACHE_SIZE = 65_536

DEFAULT_RECEIVE_MAXIMUM: Final = 4 * BATCH_SIZE


def default_client_id() -> str:
    return f"v2c-gateway-{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class GatewayConfig:
    endpoint: MqttEndpoint
    # Stable per gateway instance: a restarted gateway resumes its persistent
    # session and receives what it had not acknowledged.
    client_id: str = field(default_factory=default_client_id)
    share_group: str = "v2c"
    # Messages admitted at once (the MQTT 5 Receive Maximum the gateway
    # sends). Four batches of the production rules' 100 records: a batch can
    # fill while the previous ones are in their handlers. At 64 no batch
    # ever reached 100 records, and each record paid a larger share of a
    # request. Bounded memory: 400 x the broker's 128 KB packet limit.
    receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM
    workers: int = 16
    # Messages of one vehicle handled at once: the rest of the window stays
    # free for the fleet while one vehicle floods. A vehicle sends ~1 message
    # a second (a flush of its 1,000-sample buffer: 20-40 batches), so 4 is
    # room to spare; 1 would handle each vehicle's messages strictly in order.
    per_vehicle_in_flight: int = 4
    # Threads for dead-letter writes alone: a hung or full handler pool
    # cannot keep a failure from being recorded and acknowledged.
    dlq_workers: int = 4
    # Handler calls past their timeout whose threads may be replaced; None: `workers`.
    max_abandoned_workers: int | None = None
    session_expiry_s: int = 3600
    keepalive_s: int = 30
    drain_timeout_s: float = 10.0
    # Move what the process holds at start (modules, handlers' clients) out of
    # the garbage collector's sight, once per process (`freeze_startup_heap`):
    # for a process that is the gateway (`v2c gateway run`, the benches), not
    # for one that hosts it among other things (a test run).
    freeze_heap: bool = False

    def __post_init__(self) -> None:
        if min(self.receive_maximum, self.workers, self.per_vehicle_in_flight) < 1:
            raise ValueError("receive_maximum, workers and per_vehicle_in_flight must be >= 1")
        if self.dlq_workers < 1:
            raise ValueError("dlq_workers must be >= 1")


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
        self._pool = HandlerPool(
            config.workers, name="v2c-handler", max_abandoned=config.max_abandoned_workers
        )
        self._dlq_pool = HandlerPool(config.dlq_workers, name="v2c-dlq")
        self._client: Any = None
        # Per-message work is hoisted here: the metric children of each rule
        # (a `labels()` lookup takes a lock and hashes the labels every call)
        # and the rules each topic matches.
        self._rule_metrics = {r.name: RuleMetrics.of(self.metrics, r.name) for r in rules}
        self._routes: dict[str, tuple[Route, ...]] = {}
        # Queue-fed rules collect their messages into batches (ADR 0009).
        self._batchers = {
            r.name: RuleBatcher(
                r,
                self._handlers[r.name],
                self._pool,
                self._dead_letter_record(r),
                log_stream=config.client_id,
                hurry=lambda: self._scheduler.waiting > 0 and self._window_full(),
            )
            for r in rules
            if r.source is EventSource.SQS
        }
        # Receive Maximum, enforced here as well: mosquitto 2.0.11 (Debian 12)
        # overruns it once messages queue for a client: each PUBACK refills the
        # window by more than one message (measured: 1,600+ unacknowledged
        # messages delivered at a Receive Maximum of 64; docs/benchmarks.md).
        # Messages past the window wait here, unacknowledged, before a handler
        # (and its store) sees them: in their vehicle's queue, taken round robin.
        self._scheduler = FairScheduler(config.receive_maximum, config.per_vehicle_in_flight)
        self._unacked = 0  # received, not yet acknowledged: in flight + waiting
        self._in_flight = 0  # inside the window: being handled
        self._max_in_flight = 0
        self._max_waiting = 0
        self.metrics.waiting.set_function(lambda: self._scheduler.waiting)
        self.metrics.abandoned.set_function(lambda: self._pool.abandoned)
        self._idle = asyncio.Event()
        self._idle.set()
        self._connected = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        if cfg.freeze_heap:
            freeze_startup_heap()
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
        for batcher in self._batchers.values():
            batcher.flush_now()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.config.drain_timeout_s)
        except TimeoutError:
            logger.warning("drain timed out", extra={"unacknowledged": self._unacked})
        if self._client is not None:
            await self._client.disconnect()
        self._pool.shutdown()
        self._dlq_pool.shutdown()
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
        """The most messages ever waiting for a slot: beyond Receive Maximum (a broker
        overrunning it) or beyond their vehicle's `per_vehicle_in_flight`."""
        return self._max_waiting

    @property
    def scheduler(self) -> FairScheduler:
        """Who is handled next (read-only use: counts per vehicle, for tests and benches)."""
        return self._scheduler

    @property
    def pool(self) -> HandlerPool:
        """The handlers' worker pool (read-only use: abandoned calls, replacements)."""
        return self._pool

    def _window_full(self) -> bool:
        """No slot is free: only then do open batches go at once when a
        message waits. A message that waits behind its own vehicle's cap waits at most a
        batch window; flushing for it too made every batch small whenever one
        vehicle had a backlog (measured: 2 samples per BatchWriteItem with two
        rules sharing the window, 16 without)."""
        return self._scheduler.active >= self._scheduler.slots

    # -- message path ------------------------------------------------------
    async def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        self._unacked += 1
        self._idle.clear()
        key = vehicle_key(topic)
        scheduler = self._scheduler
        try:
            if not scheduler.try_acquire(key):
                waiting = scheduler.waiting + 1
                if waiting > self._max_waiting:
                    self._max_waiting = waiting
                if self._window_full():
                    for batcher in self._batchers.values():
                        batcher.flush_soon()  # open batches hold the slots it waits for
                await scheduler.acquire(key)
            try:
                self._in_flight += 1
                if self._in_flight > self._max_in_flight:
                    self._max_in_flight = self._in_flight
                self.metrics.in_flight.inc()
                try:
                    await self._route(topic, payload, qos, properties)
                finally:
                    self._in_flight -= 1
                    self.metrics.in_flight.dec()
            finally:
                scheduler.release(key)
            return 0  # PUBACK / PUBREC success, sent by gmqtt now
        finally:
            self._unacked -= 1
            if self._unacked == 0:
                self._idle.set()

    async def _route(
        self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> None:
        routes = self._routes.get(topic)
        if routes is None:
            routes = self._new_route(topic)
        if not routes:
            self.metrics.unrouted.inc()
            logger.warning("no rule for topic", extra={"topic": topic})
        props = MqttProperties.json_from_gmqtt(properties)
        received = int(time.time() * 1000)
        for route in routes:
            await self._dispatch(route, topic, payload, qos, props, received)

    def _new_route(self, topic: str) -> tuple[Route, ...]:
        if len(self._routes) >= ROUTE_CACHE_SIZE:
            self._routes.clear()
        routes = tuple(
            Route.of(rule, topic, self._rule_metrics[rule.name], self._batchers.get(rule.name))
            for rule in match_rules(self.rules, topic)
        )
        self._routes[topic] = routes
        return routes

    async def _dispatch(
        self,
        route: Route,
        topic: str,
        payload: bytes,
        qos: int,
        props: dict[str, Any],
        received: int,
    ) -> None:
        rule, metrics, batcher = route.rule, route.metrics, route.batcher
        metrics.received.inc()
        started = time.perf_counter()
        if batcher is not None:
            try:
                event = route.event(payload, qos, props, received)
            except Exception as exc:
                await self._dead_letter(rule, topic, payload, props, exc)
            else:
                # Settles once the record succeeded or was dead-lettered.
                if await batcher.submit(event, received):
                    metrics.handled.inc()
            finally:
                metrics.latency.observe(time.perf_counter() - started)
            return
        try:
            event = route.event(payload, qos, props, received)
            context = LambdaContext(
                function_name=rule.name,
                timeout_s=rule.timeout_s,
                log_stream_name=self.config.client_id,
            )
            call = self._pool.submit(self._handlers[rule.name], event, context)
            # One timer that fails the call's future when it is due: what
            # asyncio.timeout does, without its per-call context manager and
            # task lookups (~3 us of the ~20 us the gateway spent per message).
            expiry = asyncio.get_running_loop().call_later(rule.timeout_s, expire, call)
            try:
                await call
            except TimeoutError:
                # Given up: the thread it holds is replaced, the message dead-lettered
                # and acknowledged below; whatever the call returns later is dropped.
                self._pool.abandon(call)
                raise HandlerTimeout(f"handler {rule.handler} exceeded {rule.timeout_s}s") from None
            finally:
                expiry.cancel()
        except Exception as exc:
            await self._dead_letter(rule, topic, payload, props, exc)
        else:
            metrics.handled.inc()
        finally:
            metrics.latency.observe(time.perf_counter() - started)

    def _dead_letter_record(self, rule: Rule) -> DeadLetter:
        """How a batcher dead-letters one of its records: as the message it came from."""

        async def dead_letter(record: PendingRecord, exc: Exception) -> None:
            event = record.message.event
            await self._dead_letter(
                rule,
                str(event["topic"]),
                event_payload(event),
                dict(event.get("properties") or {}),
                exc,
                attempts=record.message.receive_count,
            )

        return dead_letter

    async def _dead_letter(
        self,
        rule: Rule,
        topic: str,
        payload: bytes,
        props: dict[str, Any],
        exc: Exception,
        attempts: int = 1,
    ) -> None:
        record = DeadLetterRecord.for_publish(
            topic,
            payload,
            queue=rule.dlq,
            direction=Direction.INBOUND,
            source=rule.name,
            error=exc,
            attempts=attempts,
            properties=props,
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
                    # Its own pool: never queued behind (or starved by) handler calls.
                    await self._dlq_pool.submit(store.put, record)
                except TransientError:
                    self.metrics.dlq_write_failures.labels(rule.dlq).inc()
                    raise
        self.metrics.dlq_messages.labels(
            queue=rule.dlq,
            region=record.region,
            message_type=rule.name,
            reason=record.reason,
        ).inc()


_heap_frozen = False


def freeze_startup_heap() -> None:
    """Collect once, then freeze what survives (`gc.freeze`), once per process.

    Why: every message leaves container objects behind while it waits or is
    in flight (its task, coroutine, future, event), and when the broker
    overruns the window thousands wait at once, so they reach the oldest
    generation and set off full collections, each walking everything the
    process imported. Measured in `v2c bench gateway`: 3 full collections of
    ~95 ms in a 20,000-message burst, a sixth of the gateway's CPU; frozen,
    one of ~65 ms. Objects made after the freeze are collected as before.
    """
    global _heap_frozen
    if _heap_frozen:
        return
    _heap_frozen = True
    gc.collect()
    gc.freeze()


def vehicle_key(topic: str) -> str:
    """The vehicle a message is scheduled under: the topic's vehicle segment
    (`v2c/v1/{region}/{vehicle}/...`, vouched for by the broker's ACL), or the
    whole topic when it has none (such a message is unrouted anyway). A split,
    not `Topic.parse`: it runs for every message before admission, and a topic
    outside the scheme is refused later, by the event, with a record."""
    parts = topic.split("/", 4)
    return parts[3] if len(parts) > 4 else topic


async def run_gateway(gateway: Gateway, stop: asyncio.Event) -> None:
    """Run until `stop` is set (SIGTERM/SIGINT in the CLI), then drain."""
    await gateway.start()
    try:
        await stop.wait()
    finally:
        await gateway.stop()
