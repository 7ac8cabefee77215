"""The Prometheus alert rules are valid, tested, and cover every alert of specs 000 and 001.

promtool (Debian's `prometheus` package; scripts/setup.sh installs it) checks
the rules file and runs its unit tests. Python then holds the files to the
specs: every alert the specs name is a rule, and every rule has a promtool
case where it fires and one where it stays quiet, so a threshold that drifted
the wrong way cannot pass unnoticed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from v2c.infra.observability import RULES_PATH, RULES_TEST_PATH

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY_DOC = ROOT / "docs" / "observability.md"
SOURCE_ROOTS = ("proto", "handlers", "gateway", "infra", "vehicle_sim")
TIMEOUT_S = 120

# The alerts specs 000 and 001 name, as rule names. From their "Alerts" YAML,
# and from the diagrams' "Trigger alert" / "Alert:" steps (names ours).
SPEC_ALERTS = (
    # 000, Alerts
    "HighOTARollbackRate",
    "HSMSigningServiceDown",
    "OTACampaignStalled",
    "SignatureVerificationFailure",
    "HighDownloadTimeout",
    "CanaryDeploymentFailure",
    # 000, diagrams: the monitor's "High OTA failure rate", "ALERT: MQTT broker
    # unavailable", "Alert: S3 download failures", "Alert: Checksum validation
    # failure", "Alert: Post-install verification failure", "Alert: Flash write failure"
    "HighOTAFailureRate",
    "MQTTBrokerUnavailable",
    "OTAS3DownloadFailures",
    "OTAChecksumFailure",
    "OTAPostInstallVerificationFailure",
    "OTAFlashWriteFailure",
    # 001, Alerts (its "CertificateExpiringSSoon" is a typo)
    "HighTelemetryFailureRate",
    "LowConnectionSuccessRate",
    "HighP99Latency",
    "DLQBacklog",
    "CertificateExpiringSoon",
    "LocalBufferOverflow",
    "BatchDecompressionFailure",
    # 001, diagrams: "PagerDuty: Vehicle certificate expired"
    "CertificateExpired",
)
SEVERITIES = {"P0", "P1", "P2", "P3"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is missing: run scripts/setup.sh (it installs Debian's `prometheus` "
            "package, which ships promtool)"
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        cwd=RULES_PATH.parent,
    )


def _rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES_PATH.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def _cases() -> list[dict[str, Any]]:
    """Every alert_rule_test of the promtool test file, flattened."""
    tests = yaml.safe_load(RULES_TEST_PATH.read_text())["tests"]
    return [case for test in tests for case in test.get("alert_rule_test", [])]


def test_promtool_check_rules_passes() -> None:
    result = _run("check", "rules", RULES_PATH.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _run("test", "rules", RULES_TEST_PATH.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_are_exactly_the_spec_alerts() -> None:
    assert sorted(_rules()) == sorted(SPEC_ALERTS)


@pytest.mark.parametrize("alert", SPEC_ALERTS)
def test_every_alert_has_a_firing_and_a_quiet_case(alert: str) -> None:
    cases = [case for case in _cases() if case["alertname"] == alert]

    firing = [case for case in cases if case.get("exp_alerts")]
    quiet = [case for case in cases if case.get("exp_alerts") == []]
    assert firing, f"{alert}: no promtool case where it fires"
    assert quiet, f"{alert}: no promtool case where it stays quiet (exp_alerts: [])"


@pytest.mark.parametrize("alert", SPEC_ALERTS)
def test_every_rule_has_severity_annotations_and_a_runbook_heading(alert: str) -> None:
    rule = _rules()[alert]
    annotations = rule["annotations"]
    headings = {
        line.lstrip("#").strip().lower()
        for line in OBSERVABILITY_DOC.read_text().splitlines()
        if line.startswith("### ")
    }

    assert rule["labels"]["severity"] in SEVERITIES
    assert annotations["summary"]
    assert "$value" in annotations["description"] or "$labels" in annotations["description"]
    assert annotations["runbook_url"] == f"docs/observability.md#{alert.lower()}"
    assert alert.lower() in headings, f"docs/observability.md has no '### {alert}'"


def test_every_metric_a_rule_reads_is_defined_in_the_code() -> None:
    """A metric name a rule misspells would never match, and its promtool
    cases could share the typo: the name must be one the code registers."""
    names = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for rule in _rules().values()
        for name in re.findall(r"\bv2c_[a-z0-9_]+", rule["expr"])
    }
    sources = "\n".join(
        path.read_text()
        for root in SOURCE_ROOTS
        for path in (ROOT / root).rglob("*.py")
        if "observability" not in path.parts
    )

    missing = sorted(name for name in names if f'"{name}"' not in sources)
    assert not missing, f"no metric registered under these names: {missing}"
