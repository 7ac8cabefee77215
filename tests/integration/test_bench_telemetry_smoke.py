"""`v2c bench telemetry` end to end at a small size: it spawns its own moto
server, runs every part, and prints one JSON document (and nothing else) on
stdout. Only the shape and the counts are checked, never a rate or a ratio's
value: the machine is shared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MESSAGES = 100
BATCH_SIZE = 25


def test_bench_telemetry_prints_one_json_report_with_compression_baselines_and_handlers(
    tmp_path: Path,
) -> None:
    json_out = tmp_path / "bench.json"
    cli = [sys.executable, "-c", "from v2c.infra.cli import main; main()"]
    args = [
        *("--messages", str(MESSAGES), "--batch-size", str(BATCH_SIZE), "--vehicles", "2"),
        *("--compression-batches", "2", "--training-batches", "16"),
    ]
    done = subprocess.run(
        [*cli, "bench", "telemetry", *args, "--json-out", str(json_out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(done.stdout)  # stdout is the JSON document alone
    assert json.loads(json_out.read_text()) == report
    assert report["bench"] == "telemetry"
    assert {"machine", "parameters", "results", "ratios", "started_at"} <= report.keys()
    assert report["parameters"]["messages"] == MESSAGES

    results = report["results"]
    assert set(results["compression"]) == {"25", "50"}
    for entry in results["compression"].values():
        for kind in ("zstd", "zstd_dictionary"):
            assert {"envelope_bytes", "bytes_per_sample", "compression_ratio"} <= entry[kind].keys()
    for phase in ("baseline_put_item", "baseline_batch_write", "handlers_singles"):
        assert results[phase]["stored"] == MESSAGES
        assert {"seconds", "msgs_per_s"} <= results[phase].keys()
    assert results["handlers_batches"]["stored"] == MESSAGES
    assert results["handlers_batches"]["batches"] == MESSAGES // BATCH_SIZE
    assert set(report["ratios"]) == {
        "singles_vs_put_item",
        "batches_vs_batch_write",
        "batches_vs_singles",
    }
    assert "batches / singles" in done.stderr  # the human table went to stderr
