"""template.yaml passes cfn-lint (informational rules included) and checkov, with no finding left.

Every finding that does not apply is suppressed on its resource in the
generated template, with its reason (`Metadata: checkov: skip`), so this test
fails on any new one. The linters live in `.venv-lint` (scripts/setup.sh
makes it): their dependency trees (cfn-lint pins its own boto, checkov pulls
~100 packages) stay out of the project's environment.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from v2c.infra.aws.template import TEMPLATE_PATH

ROOT = TEMPLATE_PATH.parent
LINT_BIN = ROOT / ".venv-lint" / "bin"
TIMEOUT_S = 300


def _tool(name: str) -> Path:
    path = LINT_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/setup.sh (it creates .venv-lint)")
    return path


def test_cfn_lint_finds_nothing_in_the_template() -> None:
    result = subprocess.run(
        [str(_tool("cfn-lint")), "-c", "I", "--format", "parseable", str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )

    assert result.stdout == "", result.stdout
    assert result.returncode == 0, result.stderr


def test_checkov_finds_nothing_the_template_does_not_suppress_with_a_reason() -> None:
    result = subprocess.run(
        [
            str(_tool("checkov")),
            "-f",
            str(TEMPLATE_PATH),
            "--framework",
            "cloudformation",
            "--compact",
            "--quiet",
            "--skip-download",  # no guideline download: the test runs offline
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed checks: 0" in result.stdout, result.stdout
    assert "Passed checks: " in result.stdout


def test_every_checkov_suppression_carries_a_reason() -> None:
    resources = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    skips = [
        (logical, skip)
        for logical, resource in resources.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]

    assert skips
    for logical, skip in skips:
        assert skip["id"].startswith("CKV"), logical
        assert len(skip.get("comment", "")) > 20, (logical, skip)
