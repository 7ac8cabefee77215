"""`v2c bench gateway`: how many QoS 1 messages per second the gateway turns
into handler calls, next to what the same broker delivers to a bare
subscriber in the same run, and at what latency.

Five phases against one private mosquitto:
1. baseline throughput: N messages → a bare gmqtt subscriber (optimistic acks);
2. gateway throughput: N messages → `Gateway` → the no-op handler, each
   PUBACK sent after the handler returned (the production contract); the
   rule is queue-fed in batches as every production rule is, or with
   `batched=False` one handler call per message;
3. and 4. latency at a steady paced rate (default 1,000 msg/s for 5 s), for
   the bare subscriber and the gateway: publish→received and publish→handler;
5. fairness (`gateway_fairness`): an innocent vehicle's publish→handled while
   another vehicle floods (valid messages, then sample bombs), beside the
   same figure without a flood.
Throughput counts from the start signal to the N-th message handled, so it
includes publishing; CPU per message per process tells which part is the limit.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Final

from v2c.contract.topics import Domain, TopicFilter
from v2c.infra.bench.common import (
    JsonDict,
    bench_broker,
    fmt,
    machine_info,
    make_report,
    per_second,
    ratio,
    summarize_ns,
)
from v2c.infra.bench.gateway_fairness import FairnessParams, run_fairness
from v2c.infra.bench.load import PublisherSpec, bench_topic
from v2c.infra.bench.phase import PhaseOutcome, run_phase
from v2c.infra.bench.sinks import SinkSpec, gateway_sink_main, raw_sink_main

BENCH: Final = "gateway"
_TOPIC_FILTER: Final = str(TopicFilter(domain=Domain.TELEMETRY, kind="vehicle"))
_PROBE_FILTER: Final = str(TopicFilter(domain=Domain.TELEMETRY, kind="heartbeat"))
_PROBE_TOPIC: Final = bench_topic(0, kind="heartbeat", prefix="READY")


@dataclass(frozen=True)
class GatewayBenchParams:
    messages: int = 20_000
    publishers: int = 2
    qos: int = 1
    payload_bytes: int = 250
    receive_maximum: int = 64
    workers: int = 16
    per_vehicle_in_flight: int = 4
    # The measured rule as production rules are (queue-fed, batches of 100
    # within 20 ms, 4 calls at once), or one handler call per message.
    batched: bool = True
    window: int = 64  # unacknowledged publishes per publisher
    paced_rate: float = 1000.0
    paced_seconds: float = 5.0
    # The fairness phase (see `gateway_fairness`).
    fairness_flood: int = 5000
    fairness_rate: float = 100.0
    fairness_seconds: float = 5.0
    fairness_handler_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.messages < self.publishers or self.publishers < 1:
            raise ValueError("need at least one publisher and one message per publisher")
        if self.paced_rate <= 0 or self.paced_seconds <= 0:
            raise ValueError("the paced rate and duration must be positive")
        self.fairness  # validates the fairness parameters  # noqa: B018

    @property
    def fairness(self) -> FairnessParams:
        return FairnessParams(
            flood=self.fairness_flood,
            innocent_rate=self.fairness_rate,
            innocent_seconds=self.fairness_seconds,
            handler_ms=self.fairness_handler_ms,
        )

    @property
    def paced_messages(self) -> int:
        return max(1, round(self.paced_rate * self.paced_seconds))


def _sink(params: GatewayBenchParams, host: str, port: int, **overrides: Any) -> SinkSpec:
    base: dict[str, Any] = {
        "host": host,
        "port": port,
        "topic_filter": _TOPIC_FILTER,
        "probe_topic": _PROBE_TOPIC,
        "probe_filter": _PROBE_FILTER,
        "expected": params.messages,
        "qos": params.qos,
        "receive_maximum": params.receive_maximum,
        "workers": params.workers,
        "per_vehicle_in_flight": params.per_vehicle_in_flight,
        "batched": params.batched,
    }
    return SinkSpec(**(base | overrides))


def _burst(params: GatewayBenchParams, host: str, port: int) -> list[PublisherSpec]:
    share, extra = divmod(params.messages, params.publishers)
    return [
        PublisherSpec(
            name=f"publisher-{i}",
            host=host,
            port=port,
            topic=bench_topic(i),
            messages=share + (1 if i < extra else 0),
            qos=params.qos,
            payload_bytes=params.payload_bytes,
            window=params.window,
        )
        for i in range(params.publishers)
    ]


def _paced(params: GatewayBenchParams, host: str, port: int) -> list[PublisherSpec]:
    return [
        PublisherSpec(
            name="publisher-paced",
            host=host,
            port=port,
            topic=bench_topic(0),
            messages=params.paced_messages,
            qos=params.qos,
            payload_bytes=params.payload_bytes,
            window=params.window,
            rate=params.paced_rate,
        )
    ]


def _us_per_msg(seconds: float | None, messages: int) -> float | None:
    return None if seconds is None or messages == 0 else round(seconds / messages * 1e6, 1)


def _throughput(outcome: PhaseOutcome) -> JsonDict:
    sink = outcome.sink
    received = int(sink["received"])
    seconds = float(sink["done_at"]) - outcome.go_at
    return {
        "messages": received,
        "seconds": round(seconds, 3),
        "msgs_per_s": per_second(received, seconds),
        "publish_msgs_per_s": per_second(outcome.sent, outcome.publish_s),
        "cpu_us_per_msg": {
            "publishers": _us_per_msg(outcome.publisher_cpu_s, received),
            "broker": _us_per_msg(outcome.broker_cpu_s, received),
            "sink": _us_per_msg(float(sink["cpu_s"]), received),
        },
        "puback_no_subscribers": sum(p["no_subscribers"] for p in outcome.publishers.values()),
        "puback_refused": sum(p["refused"] for p in outcome.publishers.values()),
    }


def run_gateway_bench(params: GatewayBenchParams) -> JsonDict:
    """Run the four phases on a private broker and return the report."""
    started = time.time()
    machine = machine_info()
    burst_timeout = max(120.0, params.messages / 200)
    paced_timeout = params.paced_seconds + 120.0
    with bench_broker() as broker:
        host, port, pid = broker.host, broker.port, broker.pid

        def phase(main: Any, spec: SinkSpec, pubs: list[PublisherSpec], t: float) -> PhaseOutcome:
            return run_phase(main, spec, pubs, broker_pid=pid, timeout_s=t)

        raw = phase(
            raw_sink_main,
            _sink(params, host, port, share_group="bench-raw"),
            _burst(params, host, port),
            burst_timeout,
        )
        gw = phase(
            gateway_sink_main,
            _sink(params, host, port, share_group="bench-gateway"),
            _burst(params, host, port),
            burst_timeout,
        )
        paced = {"expected": params.paced_messages, "record_latency": True}
        raw_paced = phase(
            raw_sink_main,
            _sink(params, host, port, share_group="bench-raw-paced", **paced),
            _paced(params, host, port),
            paced_timeout,
        )
        gw_paced = phase(
            gateway_sink_main,
            _sink(params, host, port, share_group="bench-gateway-paced", **paced),
            _paced(params, host, port),
            paced_timeout,
        )
        fairness, fairness_ratios = run_fairness(
            params.fairness, _sink(params, host, port), host, port, pid
        )

    baseline = _throughput(raw)
    gateway = _throughput(gw) | {
        "handled": gw.sink["handled"],
        "failed": gw.sink["failed"],
        "max_in_flight": gw.sink["max_in_flight"],
        # Received beyond Receive Maximum, waiting at the gateway's own window:
        # the broker overrunning the window (mosquitto 2.0.11 does).
        "max_waiting_beyond_receive_maximum": gw.sink["max_waiting"],
        "handler_latency_ms": gw.sink["handler_latency_ms"],
    }
    latency = {
        "rate_per_s": params.paced_rate,
        "messages": params.paced_messages,
        "baseline_publish_to_received_ms": summarize_ns(raw_paced.sink["latency_ns"]),
        "gateway_publish_to_handler_ms": summarize_ns(gw_paced.sink["latency_ns"]),
        "gateway_handler_latency_ms": gw_paced.sink["handler_latency_ms"],
    }
    ratios = {
        "gateway_vs_baseline_throughput": ratio(gateway["msgs_per_s"], baseline["msgs_per_s"]),
        "gateway_vs_baseline_sink_cpu_per_msg": ratio(
            gateway["cpu_us_per_msg"]["sink"], baseline["cpu_us_per_msg"]["sink"]
        ),
        "gateway_vs_baseline_p50_latency": ratio(
            latency["gateway_publish_to_handler_ms"]["p50"],
            latency["baseline_publish_to_received_ms"]["p50"],
        ),
    }
    ratios |= fairness_ratios
    results = {"baseline": baseline, "gateway": gateway, "latency": latency, "fairness": fairness}
    return make_report(BENCH, asdict(params), results, ratios, started_at=started, machine=machine)


def table_rows(report: JsonDict) -> list[tuple[str, str]]:
    """The human summary of a report, for `emit_report`."""
    res, ratios = report["results"], report["ratios"]
    base, gw, lat = res["baseline"], res["gateway"], res["latency"]
    p_raw, p_gw = lat["baseline_publish_to_received_ms"], lat["gateway_publish_to_handler_ms"]
    h_gw = lat["gateway_handler_latency_ms"]
    cpu = "publishers {publishers} / broker {broker} / sink {sink}"
    return [
        ("baseline: broker → bare gmqtt (msg/s)", fmt(base["msgs_per_s"])),
        ("gateway: broker → Gateway → no-op (msg/s)", fmt(gw["msgs_per_s"])),
        ("gateway / baseline", fmt(ratios["gateway_vs_baseline_throughput"], digits=3)),
        ("baseline CPU µs/msg", cpu.format(**base["cpu_us_per_msg"])),
        ("gateway CPU µs/msg", cpu.format(**gw["cpu_us_per_msg"])),
        ("gateway handled / failed", f"{gw['handled']} / {gw['failed']}"),
        ("gateway max in flight", fmt(gw["max_in_flight"])),
        ("gateway max waiting beyond the window", fmt(gw["max_waiting_beyond_receive_maximum"])),
        (f"paced rate (msg/s × {lat['messages']})", fmt(lat["rate_per_s"])),
        ("publish → bare subscriber p50 / p99 (ms)", f"{p_raw['p50']} / {p_raw['p99']}"),
        ("publish → handler p50 / p99 (ms)", f"{p_gw['p50']} / {p_gw['p99']}"),
        ("gateway handler latency p50 / p99 (ms)", f"{h_gw['p50']} / {h_gw['p99']}"),
        *_fairness_rows(res["fairness"], ratios),
    ]


def _fairness_rows(fairness: JsonDict, ratios: JsonDict) -> list[tuple[str, str]]:
    rows = []
    for run, figures in fairness.items():
        every = figures["innocent_publish_to_handled_ms"]
        rows.append(
            (f"fairness {run}: innocent p50 / p99 (ms)", f"{every['p50']} / {every['p99']}")
        )
        if run != "alone":
            during = figures["innocent_while_flood_backlog_ms"]
            n = figures["innocent_messages_while_flood_backlog"]
            rows.append(
                (
                    f"fairness {run}: innocent while flooded ({n}) p50 / p99 (ms)",
                    f"{during['p50']} / {during['p99']}",
                )
            )
            p50 = ratios.get(f"{run}_during_backlog_p50_vs_alone")
            p99 = ratios.get(f"{run}_during_backlog_p99_vs_alone")
            rows.append((f"fairness {run}: while flooded / alone, p50 / p99", f"{p50} / {p99}"))
    return rows
