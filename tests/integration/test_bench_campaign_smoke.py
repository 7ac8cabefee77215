"""`v2c bench campaign` at toy sizes: the report's shape and its internal
consistency (every notification arrived, counters exact); no timing asserts."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from v2c.infra.cli.main import app


def test_bench_campaign_reports_every_figure_with_baselines() -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "campaign",
            "--fleet-sizes",
            "60,120",
            "--fanout",
            "40",
            "--baseline-messages",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["bench"] == "campaign"
    results = report["results"]
    assert [c["targets"] for c in results["creation"]] == [60, 120]
    assert results["fanout"]["notifications"] == 40
    assert results["status_ingest"]["counters_exact"] is True
    ingest = results["status_ingest"]
    # 40 vehicles, half one report per call, half in batches: 6 progress + 1 terminal.
    assert ingest["one_at_a_time"]["reports"] == ingest["batched"]["reports"] == 20 * 7
    for key in (
        "baseline_broker_qos2",
        "baseline_moto_put_item",
        "baseline_moto_transaction",
        "baseline_moto_batch_write_25",
    ):
        assert key in results
    assert set(report["ratios"]) >= {
        "fanout_vs_raw_qos2",
        "batched_reports_vs_raw_batch_write_items",
        "batched_vs_one_at_a_time",
    }
