"""`v2c bench fleet` at toy sizes: the report's shape and its internal
consistency (every vehicle connected on both sides, every download verified,
ratios matching their parts); no timing asserts."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from v2c.infra.cli.main import app


def test_bench_fleet_reports_idle_fleets_and_downloads_beside_plain_get() -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "fleet",
            "--sizes",
            "20,40",
            "--downloads",
            "4",
            "--package-mib",
            "0.25",
            "--idle-s",
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["bench"] == "fleet"
    assert report["parameters"]["sizes"] == [20, 40]
    idle = report["results"]["idle_fleet"]
    assert [f["vehicles"] for f in idle] == [20, 40]
    for fleet in idle:
        assert fleet["all_connected"] is True
        assert fleet["limit"] is None
        assert fleet["connected"] == fleet["vehicles"]
        assert fleet["broker_established"] == fleet["vehicles"]
        assert fleet["connected_after_idle"] == fleet["vehicles"]
        assert fleet["errors"] == 0
        assert fleet["rss_after_mib"] is not None
    downloads = report["results"]["downloads"]
    assert downloads["package_bytes"] == 256 * 1024
    for phase in ("plain_get", "range_downloader"):
        assert downloads[f"{phase}_single"]["concurrency"] == 1
        assert downloads[f"{phase}_single"]["sha256_ok"] == 1
        assert downloads[f"{phase}_concurrent"]["concurrency"] == 4
        assert downloads[f"{phase}_concurrent"]["sha256_ok"] == 4
        part = downloads[f"{phase}_concurrent"]
        assert part["p50_s"] <= part["p99_s"]
    ratios = report["ratios"]
    expected = round(
        downloads["range_downloader_concurrent"]["mib_per_s"]
        / downloads["plain_get_concurrent"]["mib_per_s"],
        3,
    )
    assert abs(ratios["downloader_vs_plain_concurrent"] - expected) < 0.01
    assert ratios["downloader_vs_plain_single"] is not None
