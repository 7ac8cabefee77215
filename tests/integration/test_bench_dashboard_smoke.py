"""`v2c bench dashboard` at a smoke size: the report's shape, and that the API's
answers agree with what was seeded (counters, pages, reasons, fleet); no timing asserts."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from v2c.infra.bench.dashboard import CALLS
from v2c.infra.cli.main import app

VEHICLES = 50
BASELINE = 10


def test_bench_dashboard_reports_every_poll_call_for_both_campaigns() -> None:
    args = ["bench", "dashboard", "--vehicles", str(VEHICLES), "--repeats", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["bench"] == "dashboard"
    assert report["parameters"]["vehicles"] == VEHICLES
    results = report["results"]

    large, small = results["campaigns"]["large"], results["campaigns"]["small"]
    assert large["targets"] == VEHICLES
    assert small["targets"] == BASELINE
    for seeded in (large, small):  # mixed states: ended, failed with reasons, in flight
        assert seeded["completed"] + seeded["failed"] + seeded["in_flight"] == seeded["targets"]
        assert seeded["failed"] == sum(seeded["failures_by_reason"].values()) > 0
        assert seeded["in_flight"] > 0
        assert seeded["completed"] > 0

    names = [name for name, _ in CALLS]
    for label in ("large", "small", "small_alone"):
        calls = results["calls"][label]
        assert set(calls) == {*names, "poll", "poll_with_stats"}
        for name in names:
            figures = calls[name]
            assert figures["p95_ms"] >= figures["median_ms"] > 0
            assert figures["bytes"] > 0
        # The calls that read no AWS: the page and who am I.
        assert calls["page"]["aws_requests_total"] == calls["me"]["aws_requests_total"] == 0
        assert calls["campaign"]["aws_requests"] == {"dynamodb.GetItem": 1.0}

    answers = results["answers"]
    for label, seeded, fleet in (
        ("large", large, VEHICLES + BASELINE),
        ("small", small, VEHICLES + BASELINE),
        ("small_alone", small, BASELINE),
    ):
        answer = answers[label]
        counters = answer["counters"]
        assert counters["total"] == seeded["targets"]
        assert (counters["completed"], counters["failed"], counters["in_progress"]) == (
            seeded["completed"],
            seeded["failed"],
            seeded["in_flight"],
        )
        assert counters["pending"] == 0  # every vehicle notified: one record each
        assert answer["updates_items"] == seeded["targets"]  # at most 50: one page
        assert answer["updates_next_cursor"] is False
        assert answer["failed_items"] == seeded["failed"]
        assert answer["failures_by_reason"] == seeded["failures_by_reason"]
        assert answer["fleet_versions_total"] == fleet
        assert answer["timeline_kinds"][:2] == ["created", "started"]
        assert answer["me_roles"] == ["viewer"]
        assert answer["page_is_html"]

    # The statistics read every record of the campaign (what the poll reads less often).
    assert results["calls"]["large"]["stats"]["records_read"] >= VEHICLES
    assert results["calls"]["small"]["stats"]["records_read"] == BASELINE
    floor = results["adapter_page_floor"]
    assert set(floor) == {"as_shipped", "nagle_on"}
    assert {"stats_large_over_small", "poll_large_over_small"} <= set(report["ratios"])
