"""What every `v2c bench` shares: a private broker, percentiles, CPU
accounting, machine facts and the report (JSON on stdout, a table on stderr).

The report is one JSON document with the same top-level keys for every bench
(`bench`, `schema`, `started_at`, `machine`, `parameters`, `results`,
`ratios`), so results from different runs and benches can be compared by a
script; the human table goes to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from v2c.contract.errors import V2CError
from v2c.infra.errors import BenchError as BenchError
from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig, find_mosquitto
from v2c.infra.names import ResourceNames

SCHEMA_VERSION: Final = 1
JsonDict = dict[str, Any]


# -- statistics -------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, interpolated linearly."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low))


def summarize_ns(samples_ns: Iterable[int]) -> JsonDict:
    """count, mean, p50, p90, p99 and max of nanosecond samples, in milliseconds."""
    values = sorted(samples_ns)
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    ms = [v / 1e6 for v in values]
    return {
        "count": len(ms),
        "mean": round(sum(ms) / len(ms), 4),
        "p50": round(percentile(ms, 50), 4),
        "p90": round(percentile(ms, 90), 4),
        "p99": round(percentile(ms, 99), 4),
        "max": round(ms[-1], 4),
    }


def histogram_summary_ms(
    registry: CollectorRegistry, name: str, labels: Mapping[str, str]
) -> JsonDict:
    """count, exact mean, and p50/p99 of a Prometheus histogram, in milliseconds.

    Quantiles are interpolated inside buckets as PromQL's `histogram_quantile`
    does, so they are only as fine as the buckets; the mean (sum/count) is exact.
    """
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for metric in registry.collect():
        if metric.name != name:
            continue
        for sample in metric.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == f"{name}_count":
                count = sample.value
            elif sample.name == f"{name}_sum":
                total = sample.value
    buckets.sort()

    def quantile(q: float) -> float | None:
        if count == 0:
            return None
        rank, lower, below = q * count, 0.0, 0.0
        for bound, cumulative in buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return round(lower * 1000, 4)  # beyond the last bucket: its bound
                share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
                return round((lower + (bound - lower) * share) * 1000, 4)
            lower, below = bound, cumulative
        return None

    return {
        "count": int(count),
        "mean": round(total / count * 1000, 4) if count else None,
        "p50": quantile(0.50),
        "p99": quantile(0.99),
    }


def per_second(count: float, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


# -- machine and processes -------------------------------------------------
def process_cpu_s(pid: int | None) -> float | None:
    """User+system CPU seconds another process has used so far (Linux /proc), else None."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def mosquitto_version(executable: Path | None = None) -> str:
    try:
        binary = find_mosquitto(executable)
        out = subprocess.run(
            [str(binary), "-h"], capture_output=True, text=True, timeout=5, check=False
        )
    except (V2CError, OSError, subprocess.SubprocessError):
        return "unknown"
    found = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
    return found.group(1) if found else "unknown"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def machine_info() -> JsonDict:
    """What a reader needs to judge a number: cores, load when it started, versions."""
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": load,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(terse=True),
        "mosquitto": mosquitto_version(),
        "gmqtt": _package_version("gmqtt"),
        "paho_mqtt": _package_version("paho-mqtt"),
    }


@contextmanager
def bench_broker() -> Iterator[MosquittoBroker]:
    """A private mosquitto on a free loopback port, plain TCP, without persistence.

    Persistence only matters across restarts (it saves at autosave and exit,
    not per message), so turning it off changes no per-message cost.
    """
    with tempfile.TemporaryDirectory(prefix="v2c-bench-") as folder:
        config = MosquittoConfig(
            data_dir=Path(folder), persistence=False, connection_messages=False
        )
        with MosquittoBroker(config) as broker:
            yield broker


# -- the report ------------------------------------------------------------
def make_report(
    bench: str,
    parameters: Mapping[str, Any],
    results: Mapping[str, Any],
    ratios: Mapping[str, Any],
    *,
    started_at: float,
    machine: Mapping[str, Any] | None = None,
) -> JsonDict:
    return {
        "bench": bench,
        "schema": SCHEMA_VERSION,
        "started_at": datetime.fromtimestamp(started_at, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started_at, 1),
        "machine": dict(machine) if machine is not None else machine_info(),
        "parameters": dict(parameters),
        "results": dict(results),
        "ratios": dict(ratios),
    }


def emit_report(
    report: Mapping[str, Any],
    rows: Sequence[tuple[str, str]],
    *,
    json_out: Path | None = None,
    console: Console | None = None,
) -> None:
    """The JSON document on stdout (and in `json_out`), the `rows` as a table on stderr."""
    text = json.dumps(report, indent=2, allow_nan=False)
    if json_out is not None:
        json_out.write_text(text + "\n")
    table = Table(title=f"v2c bench {report['bench']}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    (console or Console(stderr=True)).print(table)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    """A table cell: numbers rounded, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def put_bench_package(
    ddb: Any, s3: Any, names: ResourceNames, *, name: str, model: str, payload: bytes
) -> str:
    """An available 2.0.0 firmware for `model` straight into the registry and
    its bucket (no upload path: the benches that use it measure campaigns)."""
    firmware_id = hashlib.sha256(f"{name}:2.0.0:{model}".encode()).hexdigest()[:32]
    s3.put_object(Bucket=names.firmware_bucket, Key=f"firmware/{firmware_id}", Body=payload)
    ddb.put_item(
        TableName=names.firmware_table,
        Item={
            "firmware_id": {"S": firmware_id},
            "name": {"S": name},
            "version": {"S": "2.0.0"},
            "device_model": {"S": model},
            "size_bytes": {"N": str(len(payload))},
            "sha256": {"S": hashlib.sha256(payload).hexdigest()},
            "status": {"S": "available"},
            "s3_key": {"S": f"firmware/{firmware_id}"},
        },
    )
    return firmware_id
