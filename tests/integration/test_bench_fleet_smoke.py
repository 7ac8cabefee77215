"""`v2c bench fleet` at toy sizes: the report's shape and its internal
consistency (every vehicle connected on both sides, every download verified,
ratios matching their parts); no timing asserts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from v2c.infra.cli.main import app


def run_bench(*options: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["bench", "fleet", *options])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["bench"] == "fleet"
    return report


def assert_all_connected(report: dict[str, Any], sizes: list[int], transport: str) -> None:
    idle = report["results"]["idle_fleet"]
    assert [f["vehicles"] for f in idle] == sizes
    for fleet in idle:
        assert fleet["transport"] == transport
        assert fleet["all_connected"] is True
        assert fleet["limit"] is None
        assert fleet["connected"] == fleet["vehicles"]
        assert fleet["broker_established"] == fleet["vehicles"]
        assert fleet["connected_after_idle"] == fleet["vehicles"]
        assert fleet["errors"] == 0
        assert fleet["rss_after_mib"] is not None


def test_bench_fleet_reports_idle_fleets_and_downloads_beside_plain_get() -> None:
    report = run_bench(
        "--sizes",
        "20,40",
        "--downloads",
        "4",
        "--package-mib",
        "0.25",
        "--idle-s",
        "0.2",
        "--single-rounds",
        "3",
        "--concurrent-rounds",
        "2",
    )
    assert report["parameters"]["sizes"] == [20, 40]
    assert_all_connected(report, [20, 40], "tcp")
    downloads = report["results"]["downloads"]
    assert downloads["package_bytes"] == 256 * 1024
    for phase in ("plain_get", "range_downloader"):
        single, concurrent = downloads[f"{phase}_single"], downloads[f"{phase}_concurrent"]
        assert (single["concurrency"], single["rounds"]) == (1, 3)
        assert single["sha256_ok"] == single["downloads"] == 3
        assert (concurrent["concurrency"], concurrent["rounds"]) == (4, 2)
        assert concurrent["sha256_ok"] == concurrent["downloads"] == 8
        assert concurrent["p50_s"] <= concurrent["p99_s"]
        assert concurrent["mib_per_s"] in concurrent["rounds_mib_per_s"]  # the median round
    ratios = report["ratios"]
    expected = round(
        downloads["range_downloader_concurrent"]["mib_per_s"]
        / downloads["plain_get_concurrent"]["mib_per_s"],
        3,
    )
    assert abs(ratios["downloader_vs_plain_concurrent"] - expected) < 0.01
    assert ratios["downloader_vs_plain_single"] is not None
    assert ratios["downloader_vs_plain_single_paired"] is not None
    assert ratios["downloader_vs_plain_concurrent_paired"] is not None


def test_bench_fleet_over_mutual_tls_gives_every_vehicle_its_certificate(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    report = run_bench(
        "--tls",
        "--pki-dir",
        str(pki),
        "--sizes",
        "6",
        "--idle-s",
        "0",
        "--downloads",
        "1",
        "--package-mib",
        "0.01",
        "--single-rounds",
        "1",
        "--concurrent-rounds",
        "1",
    )
    assert report["parameters"]["transport"] == "mtls"
    assert_all_connected(report, [6], "mtls")
    assert report["results"]["idle_fleet"][0]["idle_cpu_percent"] is None  # no idle phase
    assert len(list((pki / "vehicles").glob("VIN-*.pem"))) == 6  # CN = VIN, one each
