"""Every Prometheus alert has a CloudWatch alarm in template.yaml, or a written reason why not.

`template_alarms.ALERT_ALARMS` maps an alert to the alarms standing for it;
an alert it leaves out must say under its heading in docs/observability.md
why CloudWatch has nothing to alarm on ("**CloudWatch:** none: ..."). The
alarms read metrics the code emits (EMF names) or counts log lines the OTA
services write (`OTA alert <name>`), both checked here.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from v2c.handlers.ota.metrics import PrometheusAlerts
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.aws.template_alarms import (
    ALARM_TOPIC,
    ALERT_ALARMS,
    LOG_ALERTS,
    NAMESPACE,
    alarm,
)
from v2c.infra.observability import RULES_PATH

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY_DOC = ROOT / "docs" / "observability.md"
NO_ALARM = "**CloudWatch:** none"
MIN_REASON_CHARS = 60


def _alerts() -> list[str]:
    groups = yaml.safe_load(RULES_PATH.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def _resources() -> dict[str, Any]:
    resources: dict[str, Any] = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    return resources


def _sections() -> dict[str, str]:
    """The text under each `### ` heading of the doc's Alerts section."""
    text = OBSERVABILITY_DOC.read_text()
    start = text.index("\n## Alerts")
    end = text.find("\n## ", start + 1)
    alerts = text[start : end if end != -1 else len(text)]
    parts = re.split(r"^### +(.+)$", alerts, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("alert", _alerts())
def test_every_alert_has_an_alarm_or_a_written_reason(alert: str) -> None:
    section = _sections().get(alert)
    assert section is not None, f"docs/observability.md, Alerts: no '### {alert}'"
    resources = _resources()

    if alert in ALERT_ALARMS:
        for logical in ALERT_ALARMS[alert]:
            assert resources[logical]["Type"] == "AWS::CloudWatch::Alarm", logical
            assert f"`{logical}`" in section, f"{alert}'s runbook does not name {logical}"
        assert NO_ALARM not in section
    else:
        line = next((ln for ln in section.splitlines() if ln.startswith(NO_ALARM)), "")
        assert len(line) - len(NO_ALARM) >= MIN_REASON_CHARS, (
            f"{alert} has no CloudWatch alarm (template_alarms.ALERT_ALARMS) and no reason "
            f"in docs/observability.md ('{NO_ALARM}: <why>')"
        )


def test_the_map_names_only_alerts_of_the_rules_file() -> None:
    assert set(ALERT_ALARMS) <= set(_alerts())


def test_every_alarm_notifies_the_topic_and_links_its_runbook() -> None:
    alarms = {k: v for k, v in _resources().items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    headings = {h.lower() for h in _sections()}

    assert len(alarms) >= len({a for ids in ALERT_ALARMS.values() for a in ids})
    for logical, resource in alarms.items():
        props = resource["Properties"]
        assert props["AlarmActions"] == props["OKActions"], logical
        assert ALARM_TOPIC in str(props["AlarmActions"]), logical
        runbook = props["AlarmDescription"].rsplit("docs/observability.md#", 1)[1]
        assert runbook in headings, (logical, runbook)


def test_a_ratio_alarm_never_divides_by_zero() -> None:
    """Every metric-math division is inside IF(<denominator> > 0, ...)."""
    alarms = [v for v in _resources().values() if v["Type"] == "AWS::CloudWatch::Alarm"]
    expressions = [
        m["Expression"]
        for a in alarms
        for m in a["Properties"].get("Metrics", [])
        if "/" in m.get("Expression", "")
    ]

    assert expressions
    for expression in expressions:
        match = re.fullmatch(r"IF\((.+?) > 0, .*?/ *(\w+), [01]\)", expression)
        assert match, expression
        assert match.group(2) in match.group(1), expression


def test_the_emf_metrics_the_alarms_read_are_emitted_by_the_handlers() -> None:
    logged = {log_alert.metric for log_alert in LOG_ALERTS}
    read: set[str] = set()
    for resource in _resources().values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        stats = [props] + [
            m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m
        ]
        read |= {s["MetricName"] for s in stats if s.get("Namespace") == NAMESPACE}
    sources = "\n".join(p.read_text() for p in (ROOT / "handlers").rglob("*.py"))

    emf = read - logged
    assert emf
    assert not [name for name in sorted(emf) if f'"{name}"' not in sources]


@pytest.mark.parametrize("log_alert", LOG_ALERTS, ids=lambda a: a.alert)
def test_the_log_filters_match_the_line_the_alert_writes(
    log_alert: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "handlers").rglob("*.py"))
    resources = _resources()
    filters = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::MetricFilter"
        and r["Properties"]["MetricTransformations"][0]["MetricName"] == log_alert.metric
    ]

    with caplog.at_level(logging.ERROR, logger="v2c.ota.alerts"):
        PrometheusAlerts().alert(log_alert.alert, "c-1", "test")

    assert f'alert("{log_alert.alert}"' in sources  # the services raise it
    phrase = log_alert.pattern.strip('"')
    assert any(phrase in record.getMessage() for record in caplog.records)
    assert filters
    assert all(f["FilterPattern"] == log_alert.pattern for f in filters)
    assert resources[log_alert.alarm]["Properties"]["MetricName"] == log_alert.metric


def test_an_alarm_name_carries_the_stack_name() -> None:
    built = alarm("X", "d", threshold=1, single={"MetricName": "m"})

    assert built["Properties"]["AlarmName"] == {"Fn::Sub": "${AWS::StackName}-X"}
    assert built["Properties"]["TreatMissingData"] == "notBreaching"
