"""`v2c demo`: the main job (see `v2c.infra.cli.demo_view` for what it shows).

Each run starts fresh in `--dir`: what the last run left there is removed
first, except the stack's PKI (`v2c.infra.cli.demo_view.fresh_directory`), so the
demo can be run again and again in the same checkout.

At the end it prints the dashboard's address (`<api>/dashboard`, served by
the API process) and the key files to log in with; `--keep-running` leaves
the stack and the fleet up for that until Ctrl-C or SIGTERM, then stops them
as a normal end would (`wait_for_stop_signal`).

Exit codes (as every `v2c` command, `v2c.infra.cli.errors`): 0 every
campaign behaved as its gate rules say; 1 one did not (or a component
failed); 2 bad options (or a `--dir` holding other files); 3 the API
refused a request, or the last run's stack still runs in `--dir`.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from v2c.infra.settings import ApiSettings
    from v2c.vehicle_sim.fleet.simulator import FleetSimulator
    from v2c.vehicle_sim.fleet.summary import FleetSummary

T = TypeVar("T")
TELEMETRY_SAMPLES = 25


class _Loop:
    """The fleet's event loop on a background thread; the CLI stays synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fleet", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def wait_for_stop_signal(poll_s: float = 0.5) -> int:
    """Block until SIGINT (Ctrl-C) or SIGTERM arrives; return which. The
    handlers only set an event, so the caller's `finally` stops the fleet and
    the stack the same way for both (the default SIGTERM would kill the
    process and leave the stack's processes behind). Main thread only."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(poll_s):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0]


def login_lines(api: ApiSettings) -> list[str]:
    """Where the dashboard is and which file holds each role's key."""
    lines = [f"dashboard: {api.url}/dashboard"]
    files = dict(api.key_files)
    if not files and api.key_file is not None:
        files = {"fleet_manager": api.key_file}
    for role, path in sorted(files.items()):
        lines.append(f"  log in as {role}: the API key in {path}")
    return lines


async def _publish_telemetry(fleet: FleetSimulator, samples: int, within_s: float = 60) -> int:
    """Each vehicle sends `samples` samples through its own telemetry uplink as
    one ZSTD batch (buffered first, deleted on PUBACK); the samples acknowledged."""
    from v2c.vehicle_sim.sampler import TelemetrySampler

    start_ms = int(time.time() * 1000) - samples * 60_000
    vehicles = sorted(fleet.vehicles.items())
    for number, (vehicle_id, vehicle) in enumerate(vehicles):
        sampler = TelemetrySampler(vehicle_id, seed=number, start_ms=start_ms)
        for sample in sampler.samples(samples):
            vehicle.telemetry.publish(sample)
    await asyncio.gather(*(v.telemetry.flush(within_s) for _, v in vehicles))
    return sum(v.telemetry.stats().delivered for _, v in vehicles)


def demo(
    vehicles: Annotated[int, typer.Option(min=2, max=10_000, help="Fleet size.")] = 200,
    faults: Annotated[
        str, typer.Option(help="Fault profile: realistic, none, or a profile file.")
    ] = "realistic",
    keep_running: Annotated[
        bool, typer.Option(help="Leave the stack and the fleet running afterwards (Ctrl-C stops).")
    ] = False,
    directory: Annotated[
        Path,
        typer.Option(
            "--dir",
            help="Where the stack and fleet live; each run first clears what the last left "
            "(keeping stack/pki).",
        ),
    ] = Path(".demo"),
    time_scale: Annotated[
        float, typer.Option(min=0.0001, max=1.0, help="Real seconds per simulated second.")
    ] = 0.005,
    timeout: Annotated[float, typer.Option(min=10, help="Give up after this many seconds.")] = 600,
) -> None:
    """Start the stack, a simulated fleet and canary campaigns; show them working.

    Every run starts fresh: the vehicles, packages, broker sessions and logs of
    the last run in --dir are removed first (the stack's PKI is kept), so the
    fleet runs 1.0.0 again and the same 2.0.0 campaigns succeed on every run.
    """
    from v2c.infra.cli import demo_view as show
    from v2c.infra.cli.api_client import ApiClient
    from v2c.infra.local.fleet_provisioning import ensure_vehicle_certs, stack_fleet
    from v2c.infra.local.stack import LocalStack
    from v2c.infra.local.wiring import dead_letter_stores
    from v2c.infra.pki.authority import init_pki
    from v2c.vehicle_sim.delivery import BatchPolicy, DeliveryConfig
    from v2c.vehicle_sim.fleet.identity import DEFAULT_MODELS, vin_for
    from v2c.vehicle_sim.ota.device.faults import FaultProfile
    from v2c.vehicle_sim.telemetry_publisher import PublisherConfig

    console = Console(stderr=True)
    started = time.monotonic()
    try:
        profile = FaultProfile.resolve(faults)
    except Exception as exc:  # a bad name or file: the option is wrong
        raise typer.BadParameter(str(exc)) from exc
    console.rule("[bold]v2c demo")
    removed = show.fresh_directory(directory)
    if removed:
        console.print(f"a fresh start in {directory}: removed the last run's {', '.join(removed)}")
    # The fleet is known before the stack starts: issue its certificates now, so
    # `stack up` admits every vehicle to the broker's policy at once (registering
    # thousands in a running broker costs minutes: docs/architecture.md).
    console.print(f"vehicle certificates for {vehicles} vehicles ...")
    pki_dir = directory / "stack" / "pki"
    init_pki(pki_dir)
    ensure_vehicle_certs(pki_dir, [vin_for(i) for i in range(vehicles)])
    console.print(f"starting the stack in {directory / 'stack'} ...")
    stack = LocalStack(directory / "stack")
    settings = stack.start()
    loop = _Loop()
    fleet: FleetSimulator | None = None
    outcome = show.DemoOutcome()
    try:
        assert settings.api is not None
        client = ApiClient(show.target_for(settings.api.url, settings.api.key_file))
        console.print(f"API {settings.api.url}; uploading firmware {show.NEW_VERSION} ...")
        firmware = {}
        for model in DEFAULT_MODELS:
            show.upload_package(client, model, show.OLD_VERSION, directory / "packages")
            firmware[model] = show.upload_package(
                client, model, show.NEW_VERSION, directory / "packages"
            )
        console.print(f"starting {vehicles} vehicles (faults: {faults}) ...")
        # Each vehicle's samples leave as one ZSTD batch of 25.
        batches = BatchPolicy(min_samples=TELEMETRY_SAMPLES, max_samples=TELEMETRY_SAMPLES)
        fleet = stack_fleet(
            settings,
            vehicles,
            faults=profile,
            time_scale=time_scale,
            base_dir=directory / "fleet",
            installed_version=show.OLD_VERSION,
            telemetry=PublisherConfig(durable=False, delivery=DeliveryConfig(batch=batches)),
        )
        loop.run(fleet.start())
        console.print(f"faults drawn: {fleet.fault_tally or 'none'}")
        stored = loop.run(_publish_telemetry(fleet, TELEMETRY_SAMPLES))
        console.print(f"telemetry: {stored} samples sent in ZSTD batches")
        per_model = {m: sum(1 for s in fleet.specs if s.model == m) for m in DEFAULT_MODELS}
        ids = []
        for model in DEFAULT_MODELS:
            spec = show.campaign_spec(model, firmware[model], per_model[model])
            created = client.post(f"{show.BASE}/campaigns", spec)
            client.post(f"{show.BASE}/campaigns/{created['campaign_id']}/start")
            ids.append(created["campaign_id"])

        def states() -> dict[str, int]:
            assert fleet is not None
            return dict(loop.run(_summary(fleet)).by_state)

        outcome.campaigns = show.watch(client, ids, states, console, timeout)
        outcome.verdicts = {c["campaign_id"]: show.gate_problem(c) for c in outcome.campaigns}
        outcome.fleet = loop.run(_summary(fleet)).to_json()
        outcome.telemetry_stored = _count(
            settings.aws.client("dynamodb"), settings.resources.telemetry_table
        )
        stores = dead_letter_stores(settings)
        outcome.dlq_depth = {name: store.depth() for name, store in stores.items()}
        outcome.dlq_reasons = {
            name: dict(Counter(record.reason for record in store.list()))
            for name, store in stores.items()
            if outcome.dlq_depth[name]
        }
        outcome.seconds = time.monotonic() - started
        for table in show.summary_tables(outcome):
            console.print(table)
        console.print(
            "next: `v2c campaign list --stack "
            f"{directory / 'stack'}`, `v2c stats`, `v2c dlq list`, the API at "
            f"{settings.api.url}/api/v1/openapi.json, logs in {directory / 'stack' / 'logs'}"
        )
        for line in login_lines(settings.api):
            console.print(line, soft_wrap=True, highlight=False)
        if keep_running:
            console.print(
                "[bold]--keep-running[/]: the stack and the fleet stay up; Ctrl-C or SIGTERM stops"
            )
            wait_for_stop_signal()
            console.print("stopping the fleet and the stack ...")
    finally:
        if fleet is not None:
            try:
                loop.run(fleet.stop(), timeout=60)
            except Exception:
                console.print("[yellow]the fleet did not stop cleanly[/]")
        loop.close()
        stack.stop()
    if not outcome.ok:
        for campaign_id, problem in outcome.verdicts.items():
            if problem:
                console.print(f"[red]campaign {campaign_id}: {problem}[/]")
        raise typer.Exit(1)
    console.print("[green]every campaign behaved as its gate rules say[/]")


async def _summary(fleet: FleetSimulator) -> FleetSummary:
    return fleet.summary()


def _count(ddb: Any, table: str) -> int:
    total, kwargs = 0, {"TableName": table, "Select": "COUNT"}
    while True:
        answer = ddb.scan(**kwargs)
        total += int(answer.get("Count", 0))
        if not answer.get("LastEvaluatedKey"):
            return total
        kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
