"""`v2c bench rollout`: one campaign to N mTLS vehicles on the local stack, end to end.

The run (`run_rollout_bench`), each phase timed:

1. **onboarding** (`rollout_stage`): a fresh directory; N certificates; the
   broker's per-VIN policy; the stack (mosquitto, moto, gateway, API); the
   vehicles booted and written to the registry;
2. **connect**: every vehicle's mTLS MQTT 5 session, in this one process;
3. **upload**: a small package (`--package-kib`) through the API;
4. **create**: `POST /campaigns`, strategy `staged` with cumulative stages
   (default 1, 10, 50, 100 %): the first stage is the canary, and every
   stage but the last is gated by the canary gate (`canary.evaluate_gate`),
   so the rollout is canary, then staged waves, each released only when the
   previous one passed; no faults are injected, so every gate must pass.
   The API may answer before the targets are planned (a large fleet is
   planned in the background: status `planning`, the start queued);
   `wall_s.planned` is when a poll first saw them planned;
5. **dispatch to terminal**: `POST .../start`, then the campaign item is
   polled (strongly consistent GetItem, every 0.5 s) until the terminal
   counters add up to the planned targets and the campaign completed, or it
   stopped itself, or `--timeout` passed (then the report shows how far it
   got and the bench fails); progress on stderr.
   Install and reboot run in simulated time (`--time-scale` real seconds per
   simulated second: the ~625 s installation and reboot take 1.25 s at 0.002);
   the download and every message take the real time they take;
6. **the exact check** (`rollout_counters`): campaign and wave counters ==
   the update records counted by state == what the vehicles report and run.
   Any difference fails the bench (exit 1) after printing the report.

What each figure measures, and what limits it:

* `wall_s.*`: wall time per phase; `to_all_terminal` is create + dispatch to
  terminal (the goal's "all terminal"), known to within one poll.
* `notifications.per_s`: notifications the vehicles received, over the time
  from the first received to the last (their counters summed every 0.1 s on
  the fleet's loop); it spans the gates' waits, so it is the rollout's pace.
  `per_wave` times each wave from its first notification to its last: the
  fan-out rate (`best_wave_per_s`), limited by the dispatch path alone.
  A wave notified within one 0.1 s sample has no rate (`null`).
* `reports.per_s`: status reports the gateway stored (its
  `v2c_gateway_messages_handled_total{rule="ota_status"}`, read once it has
  handled every report the vehicles sent) over the dispatch to terminal
  window; `sent` is the vehicles' count and `per_vehicle` how many one update
  costs (the simulated agent reports every 10 % of a download, and each step).
  The campaign item lags the vehicles by the ingest backlog: the progress
  lines show both (`vehicles completed` and `reports sent/stored`).
* `memory.kib_per_vehicle`: this process's RSS growth from before the fleet
  was built to all connected, over the connected vehicles (vehicle objects,
  gmqtt sessions, TLS state; a small fleet also carries the process's fixed
  costs); it includes nothing of the stack.
* `cpu`: user+system CPU seconds of each process (simulator = this process,
  which also polls; `sim_loop` its fleet thread alone; gateway; api; moto;
  mosquitto) during the rollout window, and as a share of one core: a
  process near 100 % is the bottleneck (moto serializes DynamoDB under one
  lock, so it is single-core for DynamoDB).
* `aws_requests`: requests the moto server served, counted by moto's own
  recorder (`rollout_aws`), in the create, planning and dispatch phases; `backend`
  excludes the vehicles' package downloads (presigned GETs) and this bench's
  polls. `per_vehicle_update` = backend requests of the three phases / vehicles
  updated (completed). `--no-count-aws` turns the recorder off.
* `machine.load_avg_1m_at_start` and `load_avg_at_start`: the machine is
  shared; read every rate beside them.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from v2c.infra.bench.common import BenchError, JsonDict, fmt, machine_info, make_report, per_second
from v2c.infra.bench.fleet import raise_fd_limit
from v2c.infra.bench.rollout_campaign import BASE, NEW_VERSION, CampaignRun, campaign_spec
from v2c.infra.bench.rollout_counters import (
    CounterCheck,
    check,
    count_records,
    read_campaign,
    vehicle_view,
)
from v2c.infra.bench.rollout_stage import Stage, workdir
from v2c.infra.bench.rollout_watch import (
    FleetWatch,
    cpu_delta,
    cpu_seconds,
    gateway_counts,
    wave_windows,
)
from v2c.infra.local.stack_control import API, BROKER, GATEWAY, MOTO
from v2c.vehicle_sim.fleet.simulator import FleetSimulator


class RolloutNotExact(BenchError):
    """The rollout did not end with exact counters (they disagree, or it timed
    out or stopped itself first); carries the report of how far it got."""

    def __init__(self, detail: str, report: JsonDict) -> None:
        super().__init__(detail)
        self.report = report


@dataclass(frozen=True)
class RolloutBenchParams:
    vehicles: int = 10_000
    stages: tuple[int, ...] = (1, 10, 50, 100)
    time_scale: float = 0.002
    package_bytes: int = 64 * 1024
    batch_size: int = 500
    max_concurrent: int = 1000
    connect_concurrency: int = 64
    timeout_s: float = 1800.0
    directory: Path | None = None
    count_aws: bool = True
    poll_s: float = 0.5
    progress_every_s: float = 5.0

    def __post_init__(self) -> None:
        if self.vehicles < 1:
            raise ValueError("at least one vehicle")
        stages = self.stages
        if not stages or stages[-1] != 100 or any(b <= a for a, b in itertools.pairwise(stages)):
            raise ValueError("stages: strictly increasing cumulative percentages ending at 100")
        if stages[0] < 1:
            raise ValueError("stages: each from 1 to 100")
        if not 0 < self.time_scale <= 1:
            raise ValueError("the time scale must be in (0, 1]")
        if self.package_bytes < 1 or self.timeout_s <= 0 or self.poll_s <= 0:
            raise ValueError("package size, timeout and poll interval must be positive")

    def to_json(self) -> JsonDict:
        return {
            "vehicles": self.vehicles,
            "strategy": "staged",
            "stages": list(self.stages),
            "time_scale": self.time_scale,
            "package_bytes": self.package_bytes,
            "batch_size": self.batch_size,
            "max_concurrent_updates": self.max_concurrent,
            "connect_concurrency": self.connect_concurrency,
            "timeout_s": self.timeout_s,
            "count_aws": self.count_aws,
            "poll_s": self.poll_s,
        }


def _process_pids(stage: Stage) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """The stack's processes, and the fleet loop's thread in this one."""
    settings, loop, _fleet = stage.running
    p = settings.processes
    processes = {
        "simulator": os.getpid(),
        "gateway": p.get(GATEWAY),
        "api": p.get(API),
        "moto": p.get(MOTO),
        "mosquitto": p.get(BROKER),
    }
    return processes, {"sim_loop": loop.native_id}


def _verify(run: CampaignRun, stage: Stage, campaign_id: str) -> CounterCheck:
    settings, loop, fleet = stage.running
    names = settings.resources

    async def states() -> list[tuple[str, str]]:
        return [(r.state[0], r.installed_version) for r in fleet.runtimes.values()]

    return check(
        read_campaign(run.ddb, names.campaigns_table, campaign_id),
        count_records(run.ddb, names.vehicle_updates_table, campaign_id),
        vehicle_view(loop.run(states(), 120), NEW_VERSION),
    )


@dataclass
class _Observed:
    """What the rollout phase measured, for `_results`."""

    run: CampaignRun
    watch: FleetWatch
    campaign_id: str
    upload_s: float
    cpu: JsonDict
    gateway: dict[str, int]
    load_at_rollout: list[float]


def _settle(watch: FleetWatch, metrics_url: str | None, within_s: float = 15.0) -> dict[str, float]:
    """The gateway's counts once it handled every report the vehicles sent:
    its counter moves after the handler returns, a moment after the write the
    campaign item shows."""
    deadline = time.monotonic() + within_s
    while True:
        counts = gateway_counts(metrics_url)
        handled = counts.get("reports_stored", 0.0) + counts.get("reports_failed", 0.0)
        if handled >= watch.reports or time.monotonic() >= deadline:
            return counts
        time.sleep(0.2)


def _progress_extra(fleet: FleetSimulator, watch: FleetWatch, metrics_url: str | None) -> str:
    """The vehicles' side of a progress line: their states, reports sent and stored."""
    states = " ".join(f"{s.lower()} {n:,}" for s, n in fleet.summary().by_state.items())
    stored = gateway_counts(metrics_url).get("reports_stored")
    shown = "-" if stored is None else f"{round(stored):,}"
    return f"vehicles {states} | reports sent {watch.reports:,}, stored {shown}"


def _rollout(params: RolloutBenchParams, stage: Stage, console: Console) -> _Observed:
    settings, loop, fleet = stage.running
    metrics_url = settings.gateway.metrics_url if settings.gateway is not None else None
    run = CampaignRun(
        settings,
        console,
        recording=stage.recording,
        poll_s=params.poll_s,
        timeout_s=params.timeout_s,
        progress_every_s=params.progress_every_s,
        progress_extra=lambda: _progress_extra(fleet, watch, metrics_url),
    )
    watch = FleetWatch(fleet)
    firmware_id, upload_s = run.upload(params.package_bytes)
    spec = campaign_spec(
        firmware_id,
        params.vehicles,
        params.stages,
        batch_size=params.batch_size,
        max_concurrent=params.max_concurrent,
    )
    pids, threads = _process_pids(stage)
    load_at_rollout = [round(x, 2) for x in os.getloadavg()]
    loop.run(watch.start(), 30)
    gateway0, cpu0 = gateway_counts(metrics_url), cpu_seconds(pids, threads)
    console.print("campaign: create and start ...", highlight=False)
    try:
        campaign_id = run.run(spec)
        cpu1 = cpu_seconds(pids, threads)
    finally:
        loop.run(watch.stop(), 30)
    gateway1 = _settle(watch, metrics_url)
    run.finish()
    w = run.window
    return _Observed(
        run=run,
        watch=watch,
        campaign_id=campaign_id,
        upload_s=upload_s,
        cpu=cpu_delta(cpu0, cpu1, (w.completed or w.stopped or time.monotonic()) - w.create),
        gateway={k: round(v - gateway0.get(k, 0.0)) for k, v in gateway1.items()},
        load_at_rollout=load_at_rollout,
    )


def _notifications(watch: FleetWatch, waves: list[JsonDict]) -> JsonDict:
    first, last = watch.first_notification, watch.last_notification
    window = last - first if first is not None and last is not None else 0.0
    per_wave = []
    for wave, (size, seconds) in zip(
        waves, wave_windows(watch.series, [int(x.get("size", 0)) for x in waves]), strict=True
    ):
        per_wave.append(
            {
                "wave": wave.get("name"),
                "size": size,
                "window_s": None if seconds is None else round(seconds, 2),
                "per_s": per_second(size, seconds) if seconds else None,
            }
        )
    rates = [x["per_s"] for x in per_wave if x["per_s"] is not None]
    return {
        "received": watch.notifications,
        "window_s": round(window, 2),
        "per_s": per_second(watch.notifications, window),
        "per_wave": per_wave,
        "best_wave_per_s": max(rates) if rates else None,
    }


def _results(params: RolloutBenchParams, stage: Stage, seen: _Observed, began: float) -> JsonDict:
    run, watch, w = seen.run, seen.watch, seen.run.window
    counted = _verify(run, stage, seen.campaign_id)
    campaign = run.api.call("GET", f"{BASE}/campaigns/{seen.campaign_id}")
    waves = list(campaign.get("waves", []))
    end = w.all_terminal or w.stopped or time.monotonic()
    dispatch_s = end - w.created
    gateway = seen.gateway
    return {
        "vehicles": params.vehicles,
        "all_terminal": w.all_terminal is not None,
        "stopped": w.why_stopped or None,
        "campaign": {
            "campaign_id": seen.campaign_id,
            "status": campaign.get("status"),
            "target_count": campaign.get("target_count"),
            "waves": [{k: x.get(k) for k in ("name", "size", "gated")} for x in waves],
            "gate": campaign.get("gate"),
        },
        "wall_s": {
            "onboarding": stage.onboarding["seconds"],
            "connect": stage.connect["seconds"],
            "upload": round(seen.upload_s, 2),
            "create": round(w.created - w.create, 3),
            "planned": round(w.planned - w.create, 2) if w.planned else None,
            "dispatch_to_terminal": round(dispatch_s, 2),
            "to_all_terminal": round(end - w.create, 2) if w.all_terminal else None,
            "to_completed": round(w.completed - w.create, 2) if w.completed else None,
            "total": round(time.monotonic() - began, 2),
        },
        "onboarding": stage.onboarding,
        "connect": stage.connect,
        "memory": {
            "kib_per_vehicle": stage.connect["kib_per_vehicle"],
            "broker_kib_per_vehicle": stage.connect["broker_kib_per_vehicle"],
            "rss_after_connect_mib": stage.connect["rss_after_mib"],
        },
        "notifications": _notifications(watch, waves),
        "reports": {
            "sent": watch.reports,
            "stored": gateway.get("reports_stored", 0),
            "failed": gateway.get("reports_failed", 0),
            "dead_lettered": gateway.get("dead_lettered", 0),
            "per_s": per_second(gateway.get("reports_stored", 0), dispatch_s),
            "per_vehicle": (
                round(watch.reports / watch.notifications, 1) if watch.notifications else None
            ),
            "last_terminal_report_s": (
                round(watch.last_terminal - w.create, 2) if watch.last_terminal else None
            ),
        },
        "cpu": seen.cpu,
        "aws_requests": _aws(run, counted.campaign.counters.get("completed", 0)),
        "counters": counted.to_json(),
        "load_avg_at_rollout": seen.load_at_rollout,
    }


def _execute(params: RolloutBenchParams, stage: Stage, console: Console) -> JsonDict:
    began = time.monotonic()
    console.print(f"onboarding {params.vehicles:,} vehicles in {stage.root} ...", highlight=False)
    stage.set_up()
    console.print(
        f"{stage.connect['connected']:,} vehicles connected in {stage.connect['seconds']} s",
        highlight=False,
    )
    return _results(params, stage, _rollout(params, stage, console), began)


def _aws(run: CampaignRun, updated: int) -> JsonDict | None:
    tallies = run.aws_tally()
    if tallies is None:
        return None
    backend = sum(t.backend_total for t in tallies.values())
    downloads = sum(t.groups["download"] for t in tallies.values())
    return {
        "counted_by": "moto recorder",
        "phases": {name: t.to_json() for name, t in tallies.items()},
        "backend_total": backend,
        "vehicle_downloads": downloads,
        "vehicles_updated": updated,
        "per_vehicle_update": round(backend / updated, 2) if updated else None,
        "per_vehicle_update_incl_downloads": (
            round((backend + downloads) / updated, 2) if updated else None
        ),
    }


def run_rollout_bench(params: RolloutBenchParams, console: Console | None = None) -> JsonDict:
    """Run the rollout; its report, or `RolloutNotExact` (carrying it) if the counters disagree."""
    started = time.time()
    machine = machine_info()  # the load at the start, not at the end
    load = [round(x, 2) for x in os.getloadavg()]
    out = console or Console(stderr=True)
    soft, hard = raise_fd_limit()
    with workdir(params.directory) as root:
        recording = root / "moto-requests.jsonl" if params.count_aws else None
        stage = Stage(
            root=root,
            vehicles=params.vehicles,
            time_scale=params.time_scale,
            connect_concurrency=params.connect_concurrency,
            timeout_s=params.timeout_s,
            recording=recording,
        )
        try:
            results = _execute(params, stage, out)
        finally:
            stage.tear_down()
    results["load_avg_at_start"] = load
    aws = results["aws_requests"]
    report = make_report(
        "rollout",
        {**params.to_json(), "fd_limit": [soft, hard]},
        results,
        {
            "aws_requests_per_vehicle_update": aws["per_vehicle_update"] if aws else None,
            "reports_stored_per_notification": (
                round(results["reports"]["stored"] / results["notifications"]["received"], 2)
                if results["reports"]["stored"] and results["notifications"]["received"]
                else None
            ),
        },
        started_at=started,
        machine=machine,
    )
    counters = results["counters"]
    if results["stopped"]:
        raise RolloutNotExact(results["stopped"], report)
    if not counters["exact"]:
        raise RolloutNotExact("counters not exact: " + "; ".join(counters["problems"]), report)
    return report


def table_rows(report: JsonDict) -> list[tuple[str, str]]:
    r = report["results"]
    wall, n, m = r["wall_s"], r["notifications"], r["reports"]
    rows = [
        ("vehicles", fmt(r["vehicles"])),
        ("onboarding (certs / policy / stack / boot / registry)", _onboarding(r["onboarding"])),
        ("connect", f"{fmt(wall['connect'], ' s', 2)} ({fmt(r['connect']['connects_per_s'])}/s)"),
        ("create", fmt(wall["create"], " s", 3)),
        ("dispatch to all terminal", fmt(wall["dispatch_to_terminal"], " s", 2)),
        ("create to all terminal", fmt(wall["to_all_terminal"], " s", 2)),
        ("stopped", str(r["stopped"] or "-")),
        ("notifications received", fmt(n["received"])),
        (
            "notifications /s (first to last; best wave)",
            f"{fmt(n['per_s'])}; {fmt(n['best_wave_per_s'])}",
        ),
        ("reports stored (per vehicle)", f"{fmt(m['stored'])} ({fmt(m['per_vehicle'])})"),
        ("reports stored /s (dispatch to terminal)", fmt(m["per_s"])),
        ("reports dead-lettered", fmt(m["dead_lettered"])),
        ("memory per vehicle (sim / broker)", _pair(r["memory"])),
    ]
    for name, cpu in r["cpu"].items():
        rows.append(
            (f"CPU {name} (s, % of a core)", f"{fmt(cpu['cpu_s'])} ({fmt(cpu['core_percent'])})")
        )
    aws = r["aws_requests"]
    if aws is not None:
        rows.append(("AWS requests per vehicle update", fmt(aws["per_vehicle_update"], "", 2)))
    rows.append(("counters exact", "yes" if r["counters"]["exact"] else "NO"))
    return rows


def _onboarding(o: JsonDict) -> str:
    parts = ("certificates_s", "broker_policy_s", "stack_start_s", "boot_s", "registry_s")
    return " / ".join(fmt(o[k], "", 1) for k in parts) + " s"


def _pair(memory: JsonDict) -> str:
    sim, broker = memory["kib_per_vehicle"], memory["broker_kib_per_vehicle"]
    return f"{fmt(sim, ' KiB')} / {fmt(broker, ' KiB')}"
