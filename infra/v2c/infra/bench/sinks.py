"""The receiving side of a phase, each in its own process (see `phase`):

* `raw_sink_main`: a bare gmqtt subscriber with optimistic acknowledgement,
  the most a Python asyncio consumer gets out of this broker: the baseline;
* `gateway_sink_main`: the real `Gateway`, acknowledging after the handler,
  exactly as deployed, with the no-op handler (or `stamp_handler`, a no-op
  that also records publish→handler latency, for the paced phase).

Both subscribe through a shared subscription, as the gateway always does, so
the broker does the same work for both. Before reporting ready, each proves
its subscription is live by publishing probes on a second topic until one
arrives: a gmqtt subscribe has no awaitable SUBACK inside the gateway, and a
message published before it would be dropped by the broker.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import TYPE_CHECKING, Any, Final

import gmqtt
from prometheus_client import CollectorRegistry, Histogram

from v2c.contract.queue_event import record_event
from v2c.infra.bench.common import BenchError, JsonDict, histogram_summary_ms
from v2c.infra.bench.load import read_stamp

if TYPE_CHECKING:
    from v2c.gateway.metrics import GatewayMetrics
    from v2c.gateway.rules import Rule
    from v2c.gateway.runtime import Gateway

NOOP_HANDLER: Final = "v2c.handlers.noop:lambda_handler"
STAMP_HANDLER: Final = f"{__name__}:stamp_handler"
NOOP_BATCH_HANDLER: Final = f"{__name__}:noop_batch_handler"
STAMP_BATCH_HANDLER: Final = f"{__name__}:stamp_batch_handler"
SINK: Final = "sink"
BENCH_RULE: Final = "bench"
PROBE_RULE: Final = "probe"
_POLL_S: Final = 0.01
# 10 µs to ~10 s in steps of 25 %: quantiles from these are within ~12 %.
FINE_LATENCY_BUCKETS: Final = tuple(1e-5 * 1.25**i for i in range(63))

# Filled by `stamp_handler` in the gateway's worker threads (list.append is atomic).
_LATENCIES_NS: list[int] = []


def stamp_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """The no-op handler plus one clock read: how long since the vehicle published."""
    now = time.monotonic_ns()
    # 16 base64 characters are the first 12 payload bytes: the stamp.
    _LATENCIES_NS.append(now - read_stamp(base64.b64decode(event["payload"][:16])))
    return {"status": "ok"}


def noop_batch_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A queue-fed function that accepts every record of its batch."""
    return {"batchItemFailures": []}


def stamp_batch_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The batch no-op plus one clock read per record: how long since each was published."""
    now = time.monotonic_ns()
    for record in event["Records"]:
        payload = record_event(record["body"])["payload"]
        _LATENCIES_NS.append(now - read_stamp(base64.b64decode(payload[:16])))
    return {"batchItemFailures": []}


@dataclass(frozen=True)
class SinkSpec:
    host: str
    port: int
    topic_filter: str
    probe_topic: str
    probe_filter: str
    expected: int
    qos: int = 1
    receive_maximum: int = 64
    workers: int = 16
    per_vehicle_in_flight: int = 4
    record_latency: bool = False
    # True: the bench rule is queue-fed in batches, as every production rule
    # is (`v2c.gateway.rules.RULES`); False: one handler call per message.
    batched: bool = True
    share_group: str = "bench"
    timeout_s: float = 300.0

    def shared(self, topic_filter: str) -> str:
        return f"$share/{self.share_group}/{topic_filter}"


def run_sink(out: Queue[Any], sink: Callable[[], Coroutine[Any, Any, JsonDict]]) -> None:
    # stdout belongs to the bench's JSON document: anything a child prints
    # (the gateway logs JSON lines) goes to stderr instead.
    os.dup2(2, 1)
    try:
        out.put(("result", SINK, asyncio.run(sink())))
    except BaseException:
        out.put(("error", SINK, {"traceback": traceback.format_exc()}))
        raise


async def prove_subscribed(spec: SinkSpec, seen: Callable[[], bool]) -> None:
    client: Any = gmqtt.Client(f"bench-probe-{os.getpid()}")
    await client.connect(spec.host, spec.port, keepalive=60)
    try:
        deadline = time.monotonic() + 30
        while not seen():
            if time.monotonic() > deadline:
                raise BenchError("the sink's subscription never became live")
            client.publish(spec.probe_topic, b"probe", qos=1)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a probe still on its way lands before counting starts
    finally:
        await client.disconnect()


async def wait_for(done: Callable[[], bool], spec: SinkSpec, progress: Callable[[], str]) -> None:
    deadline = time.monotonic() + spec.timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise BenchError(f"sink timed out after {spec.timeout_s:.0f} s: {progress()}")
        await asyncio.sleep(_POLL_S)


# -- the baseline -----------------------------------------------------------
class _Tally:
    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.count = self.probes = 0
        self.first_at: float | None = None
        self.done_at: float | None = None
        self.latencies_ns: list[int] = []

    def on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        now_ns = time.monotonic_ns()
        if topic == self.spec.probe_topic:
            self.probes += 1
            return 0
        self.count += 1
        if self.first_at is None:
            self.first_at = now_ns / 1e9
        if self.spec.record_latency:
            self.latencies_ns.append(now_ns - read_stamp(payload))
        if self.count == self.spec.expected:
            self.done_at = now_ns / 1e9
        return 0


async def _raw_sink(spec: SinkSpec, out: Queue[Any]) -> JsonDict:
    tally = _Tally(spec)
    client: Any = gmqtt.Client(
        f"bench-raw-{os.getpid()}", receive_maximum=spec.receive_maximum
    )  # optimistic_acknowledgement=True: PUBACK before on_message
    client.on_message = tally.on_message
    await client.connect(spec.host, spec.port, keepalive=60)
    try:
        client.subscribe(
            [
                gmqtt.Subscription(spec.shared(spec.topic_filter), qos=spec.qos),
                gmqtt.Subscription(spec.shared(spec.probe_filter), qos=spec.qos),
            ]
        )
        await prove_subscribed(spec, lambda: tally.probes > 0)
        out.put(("ready", SINK, {}))
        cpu0 = time.process_time()
        await wait_for(lambda: tally.done_at is not None, spec, lambda: f"{tally.count} received")
        cpu1 = time.process_time()
    finally:
        await client.disconnect()
    return {
        "received": tally.count,
        "first_at": tally.first_at,
        "done_at": tally.done_at,
        "cpu_s": cpu1 - cpu0,
        "latency_ns": tally.latencies_ns,
    }


def raw_sink_main(spec: SinkSpec, out: Queue[Any]) -> None:
    run_sink(out, lambda: _raw_sink(spec, out))


# -- the gateway ------------------------------------------------------------
def counter_total(registry: CollectorRegistry, name: str, rule: str) -> float:
    """A counter's value for `rule`, summed over its other labels (e.g. reason)."""
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == name
        for sample in metric.samples
        if sample.name == f"{name}_total" and sample.labels.get("rule") == rule
    )


def use_fine_latency_buckets(metrics: GatewayMetrics) -> None:
    """The gateway's own handler histogram, with buckets fine enough for sub-ms values."""
    metrics.registry.unregister(metrics.latency)
    metrics.latency = Histogram(
        "v2c_gateway_handler_latency_seconds",
        "Handler latency per rule",
        ["rule"],
        buckets=FINE_LATENCY_BUCKETS,
        registry=metrics.registry,
    )


@dataclass
class GatewayRun:
    """The gateway a sink runs for one phase (`serving_gateway`)."""

    gateway: Gateway
    registry: CollectorRegistry
    task: asyncio.Task[None]

    def check(self) -> None:
        """Raise why the gateway stopped, if it did: a phase must not wait for a dead sink."""
        if self.task.done():
            self.task.result()
            raise BenchError("the gateway stopped on its own")


@asynccontextmanager
async def serving_gateway(
    spec: SinkSpec, name: str, rules: tuple[Rule, ...], metrics: GatewayMetrics, out: Queue[Any]
) -> AsyncIterator[GatewayRun]:
    """The real gateway on the bench's broker, as every gateway sink runs it.

    Its subscription is proven live by a probe before the parent hears
    `ready`, so no counted message can be published into the void; it is
    stopped on the way out, whatever happened, so no phase leaves a gateway
    behind to steal the next phase's messages.
    """
    # Imported here: the gateway's Logger is configured at import, in this process only.
    from v2c.contract.mqtt_endpoint import MqttEndpoint
    from v2c.gateway import runtime
    from v2c.handlers.dlq.store import InMemoryDeadLetterStore

    runtime.logger.setLevel(logging.ERROR)  # its disconnect warning at stop is routine
    config = runtime.GatewayConfig(
        endpoint=MqttEndpoint(spec.host, spec.port),
        client_id=f"bench-{name}-{os.getpid()}",
        share_group=spec.share_group,
        receive_maximum=spec.receive_maximum,
        workers=spec.workers,
        per_vehicle_in_flight=spec.per_vehicle_in_flight,
        session_expiry_s=0,  # nothing queued for it once the phase is over
        freeze_heap=True,  # this child process is the gateway, as `v2c gateway run` is
    )
    gateway = runtime.Gateway(
        config, rules, {"telemetry": InMemoryDeadLetterStore("telemetry")}, metrics
    )
    registry = metrics.registry
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run_gateway(gateway, stop))
    try:
        connected = asyncio.create_task(gateway.wait_connected())
        await asyncio.wait({task, connected}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        await prove_subscribed(
            spec, lambda: counter_total(registry, "v2c_gateway_messages_handled", PROBE_RULE) > 0
        )
        out.put(("ready", SINK, {}))
        yield GatewayRun(gateway, registry, task)
    finally:
        stop.set()
        await task


def _bench_rule(spec: SinkSpec) -> Rule:
    """The measured rule: a production rule's batching (size, window, calls at
    once) on the bench's topic, or one handler call per message."""
    from v2c.gateway.rules import Rule, queue_fed

    if not spec.batched:
        handler = STAMP_HANDLER if spec.record_latency else NOOP_HANDLER
        return Rule(BENCH_RULE, spec.topic_filter, handler, dlq="telemetry", qos=spec.qos)
    handler = STAMP_BATCH_HANDLER if spec.record_latency else NOOP_BATCH_HANDLER
    return queue_fed(BENCH_RULE, spec.topic_filter, handler, "telemetry", spec.qos)


async def _gateway_sink(spec: SinkSpec, out: Queue[Any]) -> JsonDict:
    from v2c.gateway.metrics import GatewayMetrics
    from v2c.gateway.rules import Rule

    rules = (
        _bench_rule(spec),
        Rule(PROBE_RULE, spec.probe_filter, NOOP_HANDLER, dlq="telemetry", qos=spec.qos),
    )
    metrics = GatewayMetrics()
    registry = metrics.registry
    if spec.record_latency:
        use_fine_latency_buckets(metrics)

    def settled() -> float:
        return counter_total(registry, "v2c_gateway_messages_handled", BENCH_RULE) + counter_total(
            registry, "v2c_gateway_messages_failed", BENCH_RULE
        )

    async with serving_gateway(spec, "gateway", rules, metrics, out) as run:

        def done() -> bool:
            run.check()
            return settled() >= spec.expected

        cpu0 = time.process_time()
        await wait_for(done, spec, lambda: f"{settled():.0f} handled or failed")
        done_at = time.monotonic()
        cpu1 = time.process_time()
    gateway = run.gateway
    return {
        "received": int(settled()),
        "handled": int(counter_total(registry, "v2c_gateway_messages_handled", BENCH_RULE)),
        "failed": int(counter_total(registry, "v2c_gateway_messages_failed", BENCH_RULE)),
        "first_at": None,
        "done_at": done_at,
        "cpu_s": cpu1 - cpu0,
        "max_in_flight": gateway.max_in_flight,
        "max_waiting": gateway.max_waiting,
        "handler_latency_ms": histogram_summary_ms(
            registry, "v2c_gateway_handler_latency_seconds", {"rule": BENCH_RULE}
        ),
        "latency_ns": list(_LATENCIES_NS),
    }


def gateway_sink_main(spec: SinkSpec, out: Queue[Any]) -> None:
    run_sink(out, lambda: _gateway_sink(spec, out))
