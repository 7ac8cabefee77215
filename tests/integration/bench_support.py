"""`v2c bench <name>` run as a shell runs it, for the bench smoke tests.

Every bench promises the same envelope (one JSON document alone on stdout,
the same document in `--json-out`, machine, parameters, results, ratios), so
it is checked here once and each smoke test checks only its own figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-c", "from v2c.infra.cli.main import main; main()"]


def run_bench(
    name: str, args: list[str], tmp_path: Path, *, timeout: float
) -> tuple[dict[str, Any], str]:
    """The bench's report, after the checks every bench's report must pass, and
    its stderr (the human table)."""
    json_out = tmp_path / "bench.json"
    done = subprocess.run(
        [*CLI, "bench", name, *args, "--json-out", str(json_out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report: dict[str, Any] = json.loads(done.stdout)  # stdout is the JSON document alone
    assert json.loads(json_out.read_text()) == report
    assert report["bench"] == name
    assert {"machine", "parameters", "results", "ratios", "started_at"} <= report.keys()
    return report, done.stderr
