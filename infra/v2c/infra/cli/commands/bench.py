"""`v2c bench ...`: one command per benchmark, each printing one JSON document
on stdout (and a table on stderr).

To add a bench: put its runner in `v2c.infra.bench.<name>` (reusing
`v2c.infra.bench.common` for the broker, statistics and report), then add a
`@app.command("<name>")` here that parses options, runs it and calls
`emit_report`. Imports stay inside the commands: `v2c --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

P = TypeVar("P")

app = typer.Typer(
    help="Benchmarks on a private broker, each with its baseline measured in the same run.",
    no_args_is_help=True,
)

JsonOut = Annotated[
    Path | None, typer.Option("--json-out", help="Also write the JSON report to this file.")
]


def _run(
    params: Callable[[], P],
    bench: Callable[[P], Mapping[str, Any]],
    rows: Callable[[Any], Sequence[tuple[str, str]]],
    json_out: Path | None,
) -> None:
    """What every bench command does around its own runner, so they fail alike:
    options its parameters refuse are a usage error (exit 2), a run that cannot
    finish is one line and exit 1, and a finished run is one JSON report."""
    from v2c.contract.errors import V2CError
    from v2c.infra.bench.common import emit_report

    try:
        built = params()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        report = bench(built)
    except V2CError as exc:
        typer.echo(f"bench failed: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    emit_report(report, rows(report), json_out=json_out)


def _sizes(text: str) -> tuple[int, ...]:
    """`--sizes 1000,10000`; a part that is not a number is a `ValueError` (a usage error)."""
    return tuple(int(part) for part in text.split(",") if part.strip())


@app.command("gateway")
def gateway(
    messages: Annotated[int, typer.Option(min=1, help="Messages per throughput phase.")] = 20_000,
    publishers: Annotated[
        int, typer.Option(min=1, max=64, help="Publisher processes (paho-mqtt).")
    ] = 2,
    qos: Annotated[int, typer.Option(min=0, max=2, help="Publish and subscribe QoS.")] = 1,
    payload_bytes: Annotated[int, typer.Option(min=12, max=128 * 1024)] = 250,
    receive_maximum: Annotated[int, typer.Option(min=1, max=65535)] = 64,
    workers: Annotated[int, typer.Option(min=1, help="Gateway handler threads.")] = 16,
    per_vehicle_in_flight: Annotated[
        int, typer.Option(min=1, help="Gateway: messages of one vehicle handled at once.")
    ] = 4,
    per_message: Annotated[
        bool,
        typer.Option(
            "--per-message",
            help="One handler call per message, instead of the production rules' "
            "queue-fed batches.",
        ),
    ] = False,
    rate: Annotated[float, typer.Option(min=1, help="Paced latency phase: msg/s.")] = 1000.0,
    duration: Annotated[float, typer.Option(min=0.1, help="Paced latency phase: seconds.")] = 5.0,
    flood: Annotated[
        int, typer.Option(min=1, help="Fairness phase: messages of the flooding vehicle.")
    ] = 5000,
    innocent_rate: Annotated[
        float, typer.Option(min=1, help="Fairness phase: the innocent vehicle's msg/s.")
    ] = 100.0,
    innocent_duration: Annotated[
        float, typer.Option(min=0.1, help="Fairness phase: the innocent vehicle's seconds.")
    ] = 5.0,
    handler_ms: Annotated[
        float, typer.Option(min=0, help="Fairness phase: a handler's simulated store time.")
    ] = 2.0,
    json_out: JsonOut = None,
) -> None:
    """Broker → Gateway → no-op handler at QoS 1, beside raw broker → bare gmqtt subscriber;
    then an innocent vehicle's latency while another floods (the fairness phase)."""
    from v2c.infra.bench.gateway import GatewayBenchParams, run_gateway_bench, table_rows

    _run(
        lambda: GatewayBenchParams(
            messages=messages,
            publishers=publishers,
            qos=qos,
            payload_bytes=payload_bytes,
            receive_maximum=receive_maximum,
            workers=workers,
            per_vehicle_in_flight=per_vehicle_in_flight,
            batched=not per_message,
            paced_rate=rate,
            paced_seconds=duration,
            fairness_flood=flood,
            fairness_rate=innocent_rate,
            fairness_seconds=innocent_duration,
            fairness_handler_ms=handler_ms,
        ),
        run_gateway_bench,
        table_rows,
        json_out,
    )


@app.command("telemetry")
def telemetry(
    messages: Annotated[
        int, typer.Option(min=1, help="Messages per store phase (baselines and handlers).")
    ] = 2000,
    batch_size: Annotated[
        int, typer.Option(min=1, max=500, help="Samples per envelope in the handlers' batch phase.")
    ] = 25,
    vehicles: Annotated[int, typer.Option(min=1, max=100)] = 100,
    workers: Annotated[int, typer.Option(min=1, help="Threads, as the gateway's pool.")] = 16,
    compression_batches: Annotated[
        int, typer.Option(min=1, help="Batches per size in the compression figure.")
    ] = 20,
    training_batches: Annotated[
        int, typer.Option(min=8, help="Batches per size the dictionary is trained on.")
    ] = 64,
    end_to_end: Annotated[
        bool, typer.Option(help="Also through mosquitto and the gateway (the pipeline phases).")
    ] = True,
    publishers: Annotated[
        int, typer.Option(min=1, max=16, help="End to end: publisher processes (paho-mqtt).")
    ] = 2,
    broker_messages: Annotated[
        int, typer.Option(min=1, help="End to end: messages in the raw broker baseline.")
    ] = 20_000,
    rate: Annotated[
        float, typer.Option(min=1, help="End to end, paced phases: samples/s offered.")
    ] = 1000.0,
    duration: Annotated[float, typer.Option(min=0.1, help="Paced phases: seconds each.")] = 5.0,
    steady_rate: Annotated[
        float | None,
        typer.Option(min=1, help="Paced singles/s kept up with [80/60/40 % of measured]."),
    ] = None,
    steady_batch_rate: Annotated[
        float | None,
        typer.Option(min=1, help="Paced batch samples/s kept up with [80/60/40 % of measured]."),
    ] = None,
    receive_maximum: Annotated[int, typer.Option(min=1, max=65535)] = 400,
    json_out: JsonOut = None,
) -> None:
    """Batch compression; stored msg/s through the telemetry handlers and end to end through
    broker and gateway, with publish→stored latency, beside raw broker and moto rates."""
    from v2c.infra.bench.telemetry import TelemetryBenchParams, run_telemetry_bench, table_rows
    from v2c.infra.bench.telemetry_e2e import PipelineParams

    def params() -> TelemetryBenchParams:
        pipeline = (
            PipelineParams(
                publishers=publishers,
                broker_messages=broker_messages,
                paced_rate=rate,
                paced_seconds=duration,
                steady_rate=steady_rate,
                steady_batch_rate=steady_batch_rate,
                receive_maximum=receive_maximum,
            )
            if end_to_end
            else None
        )
        return TelemetryBenchParams(
            messages=messages,
            batch_size=batch_size,
            vehicles=vehicles,
            workers=workers,
            compression_batches=compression_batches,
            training_batches=training_batches,
            pipeline=pipeline,
        )

    _run(params, run_telemetry_bench, table_rows, json_out)


@app.command("campaign")
def campaign(
    fleet_sizes: Annotated[
        str, typer.Option(help="Comma-separated targeted fleet sizes to time creation for.")
    ] = "5000,100000",
    fanout: Annotated[
        int, typer.Option(min=1, max=1000, help="Notifications in the fan-out phase.")
    ] = 200,
    baseline_messages: Annotated[int, typer.Option(min=1, help="Raw broker/moto writes.")] = 2000,
    json_out: JsonOut = None,
) -> None:
    """Campaign creation time, QoS-2 fan-out and status ingest beside raw broker and moto rates."""
    from v2c.infra.bench.campaign import CampaignBenchParams, run_campaign_bench, table_rows

    _run(
        lambda: CampaignBenchParams(
            fleet_sizes=_sizes(fleet_sizes), fanout=fanout, baseline_messages=baseline_messages
        ),
        run_campaign_bench,
        table_rows,
        json_out,
    )


@app.command("creation")
def creation(
    fleet_sizes: Annotated[
        str, typer.Option(help="Comma-separated fleet sizes (cumulative, one model).")
    ] = "5000,20000,100000",
    strategy: Annotated[
        str, typer.Option(help="immediate|scheduled|staged|canary|blue_green")
    ] = "canary",
    baseline_max: Annotated[
        int, typer.Option(min=0, help="Sizes up to this also time the table select (baseline).")
    ] = 5000,
    repeats: Annotated[int, typer.Option(min=1, help="Campaigns created per size.")] = 3,
    json_out: JsonOut = None,
) -> None:
    """Campaign creation over the fleet index: answer time, time until planned, index size,
    registry seeding apart, beside the table select creation used before."""
    from v2c.infra.bench.creation import CreationBenchParams, run_creation_bench, table_rows

    _run(
        lambda: CreationBenchParams(
            fleet_sizes=_sizes(fleet_sizes),
            strategy=strategy,
            baseline_max=baseline_max,
            repeats=repeats,
        ),
        run_creation_bench,
        table_rows,
        json_out,
    )


@app.command("dashboard")
def dashboard(
    vehicles: Annotated[
        int, typer.Option(min=1, max=100_000, help="Vehicles of the large campaign.")
    ] = 10_000,
    baseline_vehicles: Annotated[
        int, typer.Option(min=1, help="Vehicles of the baseline campaign (same run).")
    ] = 10,
    repeats: Annotated[int, typer.Option(min=1, help="Timed calls per call and campaign.")] = 20,
    json_out: JsonOut = None,
) -> None:
    """Each call of the dashboard's 2 s poll through the real API (HTTP, moto): median and
    p95 ms, bytes, AWS requests and records read, for an N- and a 10-vehicle campaign."""
    from v2c.infra.bench.dashboard import DashboardBenchParams, run_dashboard_bench, table_rows

    _run(
        lambda: DashboardBenchParams(
            vehicles=vehicles, baseline_vehicles=baseline_vehicles, repeats=repeats
        ),
        run_dashboard_bench,
        table_rows,
        json_out,
    )


@app.command("fleet")
def fleet(
    sizes: Annotated[
        str, typer.Option(help="Comma-separated fleet sizes to hold connected and idle.")
    ] = "1000,10000",
    downloads: Annotated[int, typer.Option(min=1, help="Concurrent downloads (K).")] = 100,
    package_mib: Annotated[float, typer.Option(min=0.001, help="Package size in MiB.")] = 8.0,
    idle_s: Annotated[
        float, typer.Option(min=0, help="Seconds the fleet idles (keepalive is 60 s).")
    ] = 65.0,
    connect_concurrency: Annotated[
        int, typer.Option(min=1, help="Vehicles connecting at once.")
    ] = 64,
    connect_timeout_s: Annotated[
        float, typer.Option(min=1, help="Give up connecting a fleet after this long.")
    ] = 300.0,
    tls: Annotated[
        bool,
        typer.Option(
            help="Idle fleets over mutual TLS, one client certificate per vehicle (CN = VIN)."
        ),
    ] = False,
    pki_dir: Annotated[
        Path | None,
        typer.Option(help="PKI kept between runs for --tls (default: a folder in the temp dir)."),
    ] = None,
    single_rounds: Annotated[
        int, typer.Option(min=1, help="Rounds of one download alone (median reported).")
    ] = 20,
    concurrent_rounds: Annotated[
        int, typer.Option(min=1, help="Rounds of K downloads at once (median reported).")
    ] = 5,
    json_out: JsonOut = None,
) -> None:
    """Idle vehicles per process and memory per vehicle; downloader throughput beside plain GET."""
    from v2c.infra.bench.fleet import FleetBenchParams, run_fleet_bench, table_rows
    from v2c.infra.bench.fleet_idle import DEFAULT_PKI_DIR

    _run(
        lambda: FleetBenchParams(
            sizes=_sizes(sizes),
            downloads=downloads,
            package_bytes=max(1, int(package_mib * 1024 * 1024)),
            idle_s=idle_s,
            connect_concurrency=connect_concurrency,
            connect_timeout_s=connect_timeout_s,
            tls=tls,
            pki_dir=pki_dir or DEFAULT_PKI_DIR,
            single_rounds=single_rounds,
            concurrent_rounds=concurrent_rounds,
        ),
        run_fleet_bench,
        table_rows,
        json_out,
    )


@app.command("rollout")
def rollout(
    vehicles: Annotated[
        int, typer.Option(min=1, max=100_000, help="Fleet size (mTLS vehicles, one process).")
    ] = 10_000,
    stages: Annotated[
        str, typer.Option(help="Cumulative stage percentages; the first is the canary.")
    ] = "1,10,50,100",
    time_scale: Annotated[
        float,
        typer.Option(
            min=0.0001, max=1.0, help="Real seconds per simulated second (install, reboot)."
        ),
    ] = 0.002,
    package_kib: Annotated[int, typer.Option(min=1, help="Package image size in KiB.")] = 64,
    batch_size: Annotated[int, typer.Option(min=1, max=500, help="Campaign batch_size.")] = 500,
    max_concurrent: Annotated[
        int, typer.Option(min=1, max=1000, help="Campaign max_concurrent_updates.")
    ] = 1000,
    connect_concurrency: Annotated[
        int, typer.Option(min=1, help="Vehicles connecting at once.")
    ] = 64,
    timeout: Annotated[
        float, typer.Option(min=1, help="Give up when not all terminal this long after create.")
    ] = 1800.0,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="A new or empty directory to run in, kept afterwards."),
    ] = None,
    count_aws: Annotated[
        bool, typer.Option(help="Count the AWS requests moto serves (moto's recorder).")
    ] = True,
    json_out: JsonOut = None,
) -> None:
    """A stack, N onboarded mTLS vehicles, a canary-then-staged campaign to all terminal;
    wall time per phase, notifications/s, reports/s, memory, CPU per process, AWS requests
    per vehicle update, counters checked exact against DynamoDB."""
    from v2c.infra.bench.common import emit_report
    from v2c.infra.bench.rollout import (
        RolloutBenchParams,
        RolloutNotExact,
        run_rollout_bench,
        table_rows,
    )

    def bench(params: RolloutBenchParams) -> Mapping[str, Any]:
        try:
            return run_rollout_bench(params)
        except RolloutNotExact as exc:  # the report first, then the failure
            emit_report(exc.report, table_rows(exc.report), json_out=json_out)
            raise

    _run(
        lambda: RolloutBenchParams(
            vehicles=vehicles,
            stages=_sizes(stages),
            time_scale=time_scale,
            package_bytes=package_kib * 1024,
            batch_size=batch_size,
            max_concurrent=max_concurrent,
            connect_concurrency=connect_concurrency,
            timeout_s=timeout,
            directory=directory,
            count_aws=count_aws,
        ),
        bench,
        table_rows,
        json_out,
    )
