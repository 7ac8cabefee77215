"""`v2c bench creation` at small sizes: the report's shape, one size planned while
answering and one after (`planning`); no timing asserts."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from v2c.infra.cli.main import app


def test_bench_creation_reports_answer_planned_index_and_seeding() -> None:
    args = ["bench", "creation", "--fleet-sizes", "50,2100", "--baseline-max", "50"]
    result = CliRunner().invoke(app, [*args, "--repeats", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["bench"] == "creation"
    small, large = report["results"]["sizes"]
    assert (small["targets"], large["targets"]) == (50, 2100)
    assert small["answer_status"] == "created"  # few targets: planned while answering
    assert large["answer_status"] == "planning"  # more than inline_max_targets: after
    for row in (small, large):
        assert row["campaigns"] == 2
        assert row["index_bytes"] > 0
        assert row["planned_s"] >= row["answer_s"] > 0
        assert row["registry_seed_s"] > 0
    assert small["table_select_s"] is not None
    assert large["table_select_s"] is None
    assert {"answer_over_goal_2100", "planned_over_goal_2100"} <= set(report["ratios"])
