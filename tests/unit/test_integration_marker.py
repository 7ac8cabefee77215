"""`pytest -m integration` runs every integration test, as the README promises.

The mark comes from a collection hook in `tests/conftest.py`, not from a line
each module has to remember (four modules once forgot it and were silently
left out of the integration run). This asks a real pytest, in a subprocess,
what `-m integration` selects under `tests/integration/`: every test module
there, and nothing deselected.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INTEGRATION = ROOT / "tests" / "integration"


def test_every_integration_module_is_selected_by_the_integration_marker() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "integration",
            str(INTEGRATION),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    selected = {line.split("::", 1)[0] for line in result.stdout.splitlines() if "::" in line}
    modules = {path.relative_to(ROOT).as_posix() for path in INTEGRATION.glob("test_*.py")}
    assert selected == modules
    summary = result.stdout.strip().splitlines()[-1]
    assert "deselected" not in summary, summary
