"""template.yaml deploys exactly the gateway's rules table, and is current."""

from __future__ import annotations

import yaml

from v2c.gateway.rules import RULES, load_handler
from v2c.infra.aws.template import TEMPLATE_PATH, lambda_handler_path, render_text


def test_committed_template_is_current() -> None:
    assert TEMPLATE_PATH.read_text() == render_text(), (
        "template.yaml drifted from the rules table or resources: "
        "run `python -m v2c.infra.aws.template` and commit the result"
    )


def test_every_rule_is_an_iot_topic_rule_invoking_its_handler() -> None:
    resources = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    topic_rules = {k: v for k, v in resources.items() if v["Type"] == "AWS::IoT::TopicRule"}
    assert len(topic_rules) == len(RULES)
    for rule in RULES:
        payload = next(
            v["Properties"]["TopicRulePayload"]
            for v in topic_rules.values()
            if f"'{rule.name}' AS rule" in v["Properties"]["TopicRulePayload"]["Sql"]
        )
        assert payload["Sql"].endswith(f"FROM '{rule.topic_filter}'")
        function = payload["Actions"][0]["Lambda"]["FunctionArn"]["Fn::GetAtt"][0]
        assert resources[function]["Properties"]["Handler"] == lambda_handler_path(rule)
        load_handler(rule.handler)  # the entry point exists
        queue = "Sqs" if rule.dlq == "ota" else "S3"
        assert queue in payload["ErrorAction"]


def test_dead_letter_retention_matches_the_local_stack() -> None:
    resources = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    assert resources["OtaDlq"]["Properties"]["MessageRetentionPeriod"] == 1_209_600
    rule = resources["TelemetryDlqBucket"]["Properties"]["LifecycleConfiguration"]["Rules"][0]
    assert rule["ExpirationInDays"] == 90
    assert resources["SigningKey"]["Properties"]["KeySpec"] == "ECC_NIST_P256"
