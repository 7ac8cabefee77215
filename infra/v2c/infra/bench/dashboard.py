"""`v2c bench dashboard`: what each call of the dashboard's polls costs at 10,000 vehicles.

Issue #16: the page must stay responsive with a 10,000-vehicle campaign; it
polls the JSON API every 2 s. Measured in one run against a private moto
server, through the real API: the Lambda handler's resolver (`build_app`
over the production services, `api.config.dashboard_reads` included)
served by `ApiHttpServer` on loopback, called over HTTP with keep-alive as
a browser does. The campaigns are seeded as a rollout leaves them
(`dashboard_seed`: records written by the fan-out, ended by status reports).

Three measurements, each call `repeats` times (median and p95):

* `small_alone`: a fleet of `baseline_vehicles` (10) and its campaign, before
  anything else exists (a small deployment: the fleet-wide calls' baseline);
* `large` and `small`: the N-vehicle campaign and the 10-vehicle one, after
  the N vehicles joined, call by call interleaved (same moment, same
  tables): `large / small` is what the campaign's size costs a call.

Per call also, from `probe_repeats` sequential calls: the AWS requests it
makes (by operation) and the records DynamoDB read for it (hooks on the
services' boto3 session), moto's CPU and this process's CPU (the API and
the client) per call: which figure grows with the fleet, and why. The
"poll" is what the campaign page does every 2 s (`dashboard/app.js`): the
campaign, then its updates page and timeline at once; every fifth poll
the campaign statistics too (`poll_with_stats`). Beside them, a raw GetItem
on the same moto (one round trip: the floor of every call that reads).
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from v2c.handlers.api import ApiAuth, ApiServices, build_app
from v2c.handlers.api.config import dashboard_reads
from v2c.infra.aws.resources import ensure_resources
from v2c.infra.bench.common import (
    BenchError,
    JsonDict,
    fmt,
    make_report,
    percentile,
    process_cpu_s,
    ratio,
)
from v2c.infra.bench.dashboard_seed import (
    BenchServices,
    SeededCampaign,
    handler_env,
    ota_services,
    seed_campaign,
)
from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.infra.local.moto_server import MotoServer
from v2c.infra.names import ResourceNames
from v2c.infra.settings import AwsSettings

LARGE_MODEL: Final = "BenchDash"
SMALL_MODEL: Final = "BenchDashBase"
PAGE: Final = 50  # the page's updates page (`PAGE` in app.js)
STATS_EVERY: Final = 5  # polls per statistics read (`STATS_EVERY` in app.js)
# (name, path with {id} for the campaign): every call one dashboard poll makes.
CALLS: Final = (
    ("campaign", "/api/v1/ota/campaigns/{id}"),
    ("updates", f"/api/v1/ota/campaigns/{{id}}/updates?limit={PAGE}"),
    ("updates_failed", f"/api/v1/ota/campaigns/{{id}}/updates?limit={PAGE}&state=failed"),
    ("timeline", "/api/v1/ota/campaigns/{id}/timeline"),
    ("stats", "/api/v1/ota/stats/campaigns/{id}"),
    ("fleet_versions", "/api/v1/fleet/versions"),
    ("me", "/api/v1/me"),
    ("page", "/dashboard"),
)
POLL: Final = ("updates", "timeline")  # after the campaign, at once
POLL_WITH_STATS: Final = ("updates", "timeline", "stats")


@dataclass(frozen=True)
class DashboardBenchParams:
    vehicles: int = 10_000
    baseline_vehicles: int = 10
    repeats: int = 20
    probe_repeats: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.baseline_vehicles <= self.vehicles <= 100_000:
            raise ValueError("need 1 <= baseline vehicles <= vehicles <= 100,000")
        if self.repeats < 1 or self.probe_repeats < 1:
            raise ValueError("repeats must be positive")


class _Http:
    """GETs over keep-alive connections, one per thread (as a browser keeps a few)."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self._host, self._port, self._key = host, port, key
        self._local = threading.local()
        self._opened: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every connection; the next GET of each thread opens a new one."""
        with self._lock:
            opened, self._opened = self._opened, []
            self._local = threading.local()
        for conn in opened:
            conn.close()

    def get(self, path: str) -> tuple[int, bytes, float]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(
                self._host, self._port, timeout=120
            )
            with self._lock:
                self._opened.append(conn)
        began = time.perf_counter()
        try:
            conn.request("GET", path, headers={"X-API-Key": self._key})
            answer = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # The server closed an idle keep-alive connection: reconnect, as a browser does.
            conn.close()
            began = time.perf_counter()
            conn.request("GET", path, headers={"X-API-Key": self._key})
            answer = conn.getresponse()
        body = answer.read()
        took = time.perf_counter() - began
        if answer.status != 200:
            raise BenchError(f"GET {path} answered {answer.status}: {body[:300]!r}")
        return answer.status, body, took


def _summary(seconds: list[float]) -> JsonDict:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
    }


def _path(template: str, campaign_id: str) -> str:
    return template.replace("{id}", campaign_id)


def _probe(
    http: _Http, bench: BenchServices, moto_pid: int, campaign_id: str, n: int
) -> tuple[dict[str, JsonDict], dict[str, Any]]:
    """Per call: answer size, AWS requests and records read, CPU per call
    (sequential, nothing else running); and each answer's JSON."""
    found: dict[str, JsonDict] = {}
    bodies: dict[str, Any] = {}
    for name, template in CALLS:
        path = _path(template, campaign_id)
        _, body, _ = http.get(path)  # warm: connection, caches
        requests_before, records_before = bench.calls.snapshot()
        moto_before, own_before = process_cpu_s(moto_pid) or 0.0, time.process_time()
        for _ in range(n):
            http.get(path)
        moto_cpu = (process_cpu_s(moto_pid) or 0.0) - moto_before
        own_cpu = time.process_time() - own_before
        requests_after, records_after = bench.calls.snapshot()
        made = requests_after - requests_before
        found[name] = {
            "path": path,
            "bytes": len(body),
            "aws_requests": {op: round(count / n, 2) for op, count in sorted(made.items())},
            "aws_requests_total": round(sum(made.values()) / n, 2),
            "records_read": round((records_after - records_before) / n, 1),
            "moto_cpu_ms": round(moto_cpu / n * 1000, 2),
            "api_and_client_cpu_ms": round(own_cpu / n * 1000, 2),
        }
        bodies[name] = body.decode() if name == "page" else json.loads(body)
    return found, bodies


def _timed(
    http: _Http, pool: ThreadPoolExecutor, targets: Mapping[str, str], repeats: int
) -> dict[str, dict[str, JsonDict]]:
    """Each call and both polls `repeats` times per campaign, interleaved call
    by call and campaign by campaign (so load drift hits all alike)."""
    samples: dict[str, dict[str, list[float]]] = {label: {} for label in targets}

    def poll(campaign_id: str, parallel: tuple[str, ...]) -> float:
        began = time.perf_counter()
        http.get(_path(CALLS[0][1], campaign_id))
        paths = [_path(dict(CALLS)[name], campaign_id) for name in parallel]
        for future in [pool.submit(http.get, p) for p in paths]:
            future.result()
        return time.perf_counter() - began

    def call(template: str) -> Callable[[str], float]:
        return lambda campaign_id: http.get(_path(template, campaign_id))[2]

    runs = [(name, call(template)) for name, template in CALLS]
    runs += [
        ("poll", lambda cid: poll(cid, POLL)),
        ("poll_with_stats", lambda cid: poll(cid, POLL_WITH_STATS)),
    ]
    for _ in range(repeats):
        for name, run in runs:
            for label, campaign_id in targets.items():
                samples[label].setdefault(name, []).append(run(campaign_id))
    return {
        label: {name: _summary(values) for name, values in calls.items()}
        for label, calls in samples.items()
    }


def _answers(bodies: Mapping[str, Any], seeded: SeededCampaign, fleet_size: int) -> JsonDict:
    """What the answers said, checked against what was seeded (a wrong answer
    is a failed bench, not a figure)."""
    counters = bodies["campaign"]["counters"]
    stats = bodies["stats"]
    failed_page = bodies["updates_failed"]["items"]
    page = bodies["updates"]["items"]
    checks = {
        "campaign counters total": (counters["total"], seeded.targets),
        "campaign counters completed": (counters["completed"], seeded.completed),
        "stats counters total": (stats["counters"]["total"], seeded.targets),
        "stats failures by reason": (stats["failures_by_reason"], seeded.failures_by_reason),
        "updates page items": (len(page), min(PAGE, seeded.targets)),
        "fleet versions total": (bodies["fleet_versions"]["total"], fleet_size),
    }
    for what, (got, wanted) in checks.items():
        if got != wanted:
            raise BenchError(f"{what}: the API answered {got}, expected {wanted}")
    if any(u["state"] != "failed" for u in failed_page) or len(failed_page) > seeded.failed:
        raise BenchError("the state-filtered page holds records that did not fail")
    return {
        "counters": {k: v for k, v in counters.items() if isinstance(v, int)},
        "updates_items": len(page),
        "updates_next_cursor": bodies["updates"]["next_cursor"] is not None,
        "failed_items": len(failed_page),
        "failed_next_cursor": bodies["updates_failed"]["next_cursor"] is not None,
        "timeline_kinds": [e["kind"] for e in bodies["timeline"]["events"]],
        "failures_by_reason": stats["failures_by_reason"],
        "fleet_versions_total": bodies["fleet_versions"]["total"],
        "fleet_versions_groups": len(bodies["fleet_versions"]["groups"]),
        "me_roles": bodies["me"]["roles"],
        "page_is_html": "<html" in bodies["page"].lower(),
    }


def _nagle(http: _Http, server: ApiHttpServer, repeats: int) -> JsonDict:
    """GET /dashboard (no AWS call: the adapter's and the resolver's floor) on
    the adapter as it ships (TCP_NODELAY on its listening socket; Linux:
    accepted sockets inherit it), then with Nagle back on, the counterfactual:
    an answer's head and body leave in two writes, and Nagle held the body
    until the client's delayed ACK (~40 ms on every answer before the fix)."""
    times = [http.get("/dashboard")[2] for _ in range(repeats + 1)][1:]
    listener = server._socket  # the adapter exposes no option for it
    if listener is None:
        raise BenchError("the API server has no listening socket")
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    http.close()  # new connections: accepted without the option
    nagle = [http.get("/dashboard")[2] for _ in range(repeats + 1)][1:]
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    http.close()  # every later figure as shipped
    return {"as_shipped": _summary(times), "nagle_on": _summary(nagle)}


def _raw_get_item(aws: AwsSettings, names: ResourceNames, campaign_id: str, n: int) -> JsonDict:
    ddb = aws.client("dynamodb")
    key: Any = {"campaign_id": {"S": campaign_id}}
    times = []
    for _ in range(n + 1):
        began = time.perf_counter()
        ddb.get_item(TableName=names.campaigns_table, Key=key, ConsistentRead=True)
        times.append(time.perf_counter() - began)
    return _summary(times[1:])


def run_dashboard_bench(params: DashboardBenchParams) -> JsonDict:
    started = time.time()
    names = ResourceNames()
    key = secrets.token_urlsafe(24)
    with MotoServer() as moto:
        aws = AwsSettings(endpoint_url=moto.endpoint_url)
        ensure_resources(aws, names)
        with handler_env(aws, names) as env:
            bench = ota_services(aws, env)
            ota = bench.ota
            services = ApiServices(
                campaigns=ota.campaigns,
                devices=ota.devices,
                stats=ota.stats,
                firmware=ota.firmware,
                **dashboard_reads(ota, env, bench.session)._asdict(),
            )
            app = build_app(services, ApiAuth([f"bench-viewer:viewer:{key}"]))
            try:
                with (
                    ApiHttpServer(app.resolve) as server,
                    ThreadPoolExecutor(len(POLL_WITH_STATS)) as pool,
                ):
                    http = _Http(server.host, server.port, key)
                    try:
                        nagle = _nagle(http, server, params.repeats)
                        report = _run(params, started, aws, names, bench, moto.pid, http, pool)
                    finally:
                        http.close()
                    report["results"]["adapter_page_floor"] = nagle
                    return report
            finally:
                ota.close()


def _run(
    params: DashboardBenchParams,
    started: float,
    aws: AwsSettings,
    names: ResourceNames,
    bench: BenchServices,
    moto_pid: int,
    http: _Http,
    pool: ThreadPoolExecutor,
) -> JsonDict:
    n_small, n_large = params.baseline_vehicles, params.vehicles
    small = seed_campaign(bench, aws, names, model=SMALL_MODEL, vehicles=n_small)
    alone_probe, alone_bodies = _probe(
        http, bench, moto_pid, small.campaign_id, params.probe_repeats
    )
    alone_answers = _answers(alone_bodies, small, n_small)
    alone = _timed(http, pool, {"small_alone": small.campaign_id}, params.repeats)
    raw_alone = _raw_get_item(aws, names, small.campaign_id, params.repeats)
    large = seed_campaign(bench, aws, names, model=LARGE_MODEL, vehicles=n_large)
    fleet = n_small + n_large
    probes, answers = {"small_alone": alone_probe}, {"small_alone": alone_answers}
    for label, seeded in (("large", large), ("small", small)):
        probes[label], bodies = _probe(
            http, bench, moto_pid, seeded.campaign_id, params.probe_repeats
        )
        answers[label] = _answers(bodies, seeded, fleet)
    both = {"large": large.campaign_id, "small": small.campaign_id}
    timed = {**alone, **_timed(http, pool, both, params.repeats)}
    raw = _raw_get_item(aws, names, large.campaign_id, params.repeats)
    calls: dict[str, dict[str, JsonDict]] = {}
    for label in ("large", "small", "small_alone"):
        calls[label] = {
            name: {**timed[label][name], **probes[label].get(name, {})} for name in timed[label]
        }
    ratios: dict[str, Any] = {}
    for name in calls["large"]:
        big = calls["large"][name]["median_ms"]
        ratios[f"{name}_large_over_small"] = ratio(big, calls["small"][name]["median_ms"])
        ratios[f"{name}_large_over_small_alone"] = ratio(
            big, calls["small_alone"][name]["median_ms"]
        )
        ratios[f"{name}_large_over_raw_get_item"] = ratio(big, raw["median_ms"])
    results = {
        "campaigns": {"large": large.to_json(), "small": small.to_json()},
        "fleet": {"small_alone": n_small, "large_and_small": fleet},
        "calls": calls,
        "answers": answers,
        "baseline_moto_get_item": {"small_alone": raw_alone, "large_and_small": raw},
        "poll_calls": {"every_poll": ["campaign", *POLL], f"every_{STATS_EVERY}th": ["stats"]},
        "grows_with_campaign": _growth(calls),
    }
    return make_report(
        "dashboard",
        {
            "vehicles": n_large,
            "baseline_vehicles": n_small,
            "repeats": params.repeats,
            "probe_repeats": params.probe_repeats,
            "updates_page": PAGE,
        },
        results,
        ratios,
        started_at=started,
    )


def _growth(calls: Mapping[str, Mapping[str, JsonDict]]) -> list[str]:
    """Calls whose records read grow with the campaign: read 10x or more of
    the small campaign's, and more than one page's worth."""
    grown = []
    for name, figures in calls["large"].items():
        small = calls["small"].get(name, {})
        read, base = figures.get("records_read"), small.get("records_read")
        if read is not None and base is not None and read > PAGE * 2 and read >= 10 * base:
            grown.append(name)
    return grown


def table_rows(report: JsonDict) -> list[tuple[str, str]]:
    r = report["results"]
    n = f"{report['parameters']['vehicles']:,}"
    rows: list[tuple[str, str]] = []
    large, small, alone = (r["calls"][k] for k in ("large", "small", "small_alone"))
    for name in large:
        big, few, lone = large[name], small[name], alone[name]
        rows.append(
            (
                f"{name}: median ms, {n} / 10 / 10 alone (p95 {n})",
                f"{fmt(big['median_ms'])} / {fmt(few['median_ms'])} / {fmt(lone['median_ms'])}"
                f" ({fmt(big['p95_ms'])})",
            )
        )
        if "bytes" in big:
            rows.append(
                (
                    f"{name}: bytes, AWS requests, records read ({n})",
                    f"{big['bytes']:,} B, {fmt(big['aws_requests_total'])}, "
                    f"{fmt(big['records_read'])}",
                )
            )
    raw = r["baseline_moto_get_item"]["large_and_small"]
    rows.append(("raw moto GetItem median ms", fmt(raw["median_ms"], "", 2)))
    rows.append(("grows with the campaign", ", ".join(r["grows_with_campaign"]) or "-"))
    return rows
