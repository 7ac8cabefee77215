"""template.yaml deploys exactly the gateway's rules table, and is current."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from v2c.contract.events import build_event
from v2c.contract.mqtt_properties import CONTENT_TYPE, CORRELATION_DATA
from v2c.gateway.rules import RULES, EventSource, Rule, load_handler
from v2c.infra.aws.resources import VISIBILITY_PER_FUNCTION_TIMEOUT, ingest_rules, queue_specs
from v2c.infra.aws.template import (
    MIN_WINDOW_S_ABOVE_10_RECORDS,
    PARTIAL_BATCH_RESPONSE,
    QUEUE_READ_ACTIONS,
    TEMPLATE_PATH,
    batching_window_s,
    lambda_handler_path,
    render,
    render_text,
)
from v2c.infra.names import ResourceNames

Resources = dict[str, Any]


def _resources() -> Resources:
    resources: Resources = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    return resources


def _of_type(resources: Resources, kind: str) -> Resources:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def _topic_rule(resources: Resources, rule: Rule) -> dict[str, Any]:
    payload: dict[str, Any] = next(
        v["Properties"]["TopicRulePayload"]
        for v in _of_type(resources, "AWS::IoT::TopicRule").values()
        if f"'{rule.name}' AS rule" in v["Properties"]["TopicRulePayload"]["Sql"]
    )
    return payload


def _get_att(value: Any) -> str:
    """The logical id an `Fn::GetAtt [id, Arn]` names."""
    assert value["Fn::GetAtt"][1] == "Arn", value
    logical: str = value["Fn::GetAtt"][0]
    return logical


def _mapping(resources: Resources, queue: str) -> dict[str, Any]:
    """The one event source mapping that reads the queue with logical id `queue`."""
    mappings = [
        v["Properties"]
        for v in _of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if _get_att(v["Properties"]["EventSourceArn"]) == queue
    ]
    assert len(mappings) == 1, f"{queue} is read by {len(mappings)} mappings"
    return mappings[0]


def test_committed_template_is_current() -> None:
    assert TEMPLATE_PATH.read_text() == render_text(), (
        "template.yaml drifted from the rules table or resources: "
        "run `python -m v2c.infra.aws.template` and commit the result"
    )


def test_the_template_has_no_yaml_aliases_cloudformation_would_refuse() -> None:
    text = TEMPLATE_PATH.read_text()

    assert "&id" not in text
    assert "*id" not in text


def test_every_rule_is_an_iot_topic_rule_reaching_its_handler() -> None:
    resources = _resources()
    assert len(_of_type(resources, "AWS::IoT::TopicRule")) == len(RULES)
    for rule in RULES:
        payload = _topic_rule(resources, rule)
        assert payload["Sql"].endswith(f"FROM '{rule.topic_filter}'")
        (action,) = payload["Actions"]
        if rule.source is EventSource.SQS:
            queue = action["Sqs"]["QueueUrl"]["Ref"]
            function = _mapping(resources, queue)["FunctionName"]["Ref"]
        else:
            function = _get_att(action["Lambda"]["FunctionArn"])
        assert resources[function]["Properties"]["Handler"] == lambda_handler_path(rule)
        load_handler(rule.handler)  # the entry point exists
        queue = "Sqs" if rule.dlq == "ota" else "S3"
        assert queue in payload["ErrorAction"]


def test_every_production_rule_is_fed_through_its_queue() -> None:
    assert ingest_rules(RULES) == RULES  # ADR 0009: every production rule is batch-shaped


@pytest.mark.parametrize("rule", ingest_rules(RULES), ids=lambda rule: rule.name)
def test_a_queue_fed_rule_and_its_queue_mapping_say_what_the_rule_says(rule: Rule) -> None:
    resources = _resources()
    (action,) = _topic_rule(resources, rule)["Actions"]
    sqs = action["Sqs"]
    queue = sqs["QueueUrl"]["Ref"]
    queue_props = resources[queue]["Properties"]
    mapping = _mapping(resources, queue)
    function = resources[mapping["FunctionName"]["Ref"]]["Properties"]

    # the IoT rule puts the SQL's JSON, not base64 of it, on the rule's queue
    assert resources[queue]["Type"] == "AWS::SQS::Queue"
    assert queue_props["QueueName"] == rule.queue
    assert sqs["UseBase64"] is False
    # the function reads it in the rule's batches, answering per record
    assert mapping["BatchSize"] == rule.batch_size
    assert PARTIAL_BATCH_RESPONSE in mapping["FunctionResponseTypes"]
    assert mapping["MaximumBatchingWindowInSeconds"] == batching_window_s(rule)
    # as many batches at once in Lambda as in the gateway
    assert mapping["ScalingConfig"]["MaximumConcurrency"] == rule.max_concurrency
    # a record failed max_receive_count times moves to the ingest DLQ
    redrive = queue_props["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == rule.max_receive_count
    dlq = resources[_get_att(redrive["deadLetterTargetArn"])]["Properties"]
    assert dlq["QueueName"] == ResourceNames().ingest_dlq_queue
    assert dlq["MessageRetentionPeriod"] == 1_209_600 > queue_props["MessageRetentionPeriod"]
    # Lambda does not see a batch again while it may still be running it
    assert function["Timeout"] >= rule.timeout_s
    assert queue_props["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert VISIBILITY_PER_FUNCTION_TIMEOUT >= 6


def test_the_aws_batching_window_is_longer_than_the_gateways() -> None:
    # The one place the template cannot say what the rules say: Lambda wants
    # whole seconds, and at least 1 s above 10 records; the gateway waits 20 ms.
    rule = next(r for r in RULES if r.name == "telemetry")
    mapping = _mapping(_resources(), "TelemetryQueue")

    assert (rule.batch_size, rule.batch_window_ms) == (100, 20)
    assert mapping["MaximumBatchingWindowInSeconds"] == MIN_WINDOW_S_ABOVE_10_RECORDS == 1
    assert mapping["MaximumBatchingWindowInSeconds"] * 1000 != rule.batch_window_ms
    assert batching_window_s(Rule("r", "a/b", "m:f", "ota", batch_size=10, batch_window_ms=20)) == 1
    assert batching_window_s(Rule("r", "a/b", "m:f", "ota", batch_size=10)) == 0


def test_the_iot_rules_may_send_to_exactly_the_ingest_queues() -> None:
    resources = _resources()
    roles = set()
    for rule in ingest_rules(RULES):
        (action,) = _topic_rule(resources, rule)["Actions"]
        roles.add(_get_att(action["Sqs"]["RoleArn"]))
    (role,) = roles
    (policy,) = resources[role]["Properties"]["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    queues = {
        k
        for k, v in _of_type(resources, "AWS::SQS::Queue").items()
        if "RedrivePolicy" in v["Properties"]
    }

    assert statement["Action"] == ["sqs:SendMessage"]
    assert {_get_att(arn) for arn in statement["Resource"]} == queues
    assert len(queues) == len(ingest_rules(RULES))


def _statements(resources: Resources, function: str) -> list[dict[str, Any]]:
    """The statements of the role a function runs with (conditional ones unwrapped)."""
    role = _get_att(resources[function]["Properties"]["Role"])
    (policy,) = resources[role]["Properties"]["Policies"]
    found = []
    for statement in policy["PolicyDocument"]["Statement"]:
        if "Fn::If" in statement:
            statement = statement["Fn::If"][1]
        found.append(statement)
    return found


def test_each_function_reads_its_own_queue_and_no_other() -> None:
    resources = _resources()
    functions = _of_type(resources, "AWS::Serverless::Function")
    mappings = _of_type(resources, "AWS::Lambda::EventSourceMapping").values()
    reads = {
        m["Properties"]["FunctionName"]["Ref"]: _get_att(m["Properties"]["EventSourceArn"])
        for m in mappings
    }
    for name in functions:
        statements = _statements(resources, name)
        receivers = [s for s in statements if "sqs:ReceiveMessage" in s["Action"]]
        granted = {_get_att(s["Resource"]) for s in receivers}
        # its own queue; the dead-letter service (the DLQ admin, the API's
        # /api/v1/dlq) reads the OTA and ingest DLQs, which no mapping reads
        expected = {reads[name]} if name in reads else set()
        if name in ("DlqAdminFunction", "OtaApiFunction"):
            expected = {"OtaDlq", "IngestDlq"}
        assert granted == expected, name
        for statement in statements:
            if any(action.startswith("sqs:") for action in statement["Action"]):
                assert statement["Resource"] != "*", name
    for name, queue in reads.items():
        own = [s for s in _statements(resources, name) if s["Resource"] == _arn(queue)]
        assert [s["Action"] for s in own] == [list(QUEUE_READ_ACTIONS)]


def _arn(logical: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical, "Arn"]}


def test_the_template_declares_the_queues_bootstrap_creates() -> None:
    resources = _resources()
    declared = {
        v["Properties"]["QueueName"]: v["Properties"]
        for v in _of_type(resources, "AWS::SQS::Queue").values()
    }

    for spec in queue_specs(ResourceNames()):
        props = declared.pop(spec.name)
        assert props["MessageRetentionPeriod"] == spec.retention_seconds
        assert props.get("VisibilityTimeout") == spec.visibility_timeout_s
        redrive = props.get("RedrivePolicy", {})
        assert redrive.get("maxReceiveCount", 0) == spec.max_receive_count
        if spec.dead_letter is not None:
            target = resources[_get_att(redrive["deadLetterTargetArn"])]
            assert target["Properties"]["QueueName"] == spec.dead_letter
    assert declared == {}


def test_a_rule_invoked_directly_keeps_its_lambda_action_and_a_scoped_permission() -> None:
    direct = Rule(
        "probe", "v2c/v1/+/+/probe/x", "v2c.handlers.telemetry_ingest:lambda_handler", "telemetry"
    )

    resources = render((direct,))["Resources"]

    (action,) = resources["ProbeTopicRule"]["Properties"]["TopicRulePayload"]["Actions"]
    assert _get_att(action["Lambda"]["FunctionArn"]) == "ProbeFunction"
    permission = resources["ProbeInvokePermission"]["Properties"]
    assert permission["Principal"] == "iot.amazonaws.com"
    # only this rule, of this account, may invoke it (no confused deputy)
    assert permission["SourceArn"] == _arn("ProbeTopicRule")
    assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert _of_type(resources, "AWS::Lambda::EventSourceMapping") == {}
    assert "IotIngestRole" not in resources


def test_every_invoke_permission_names_its_source_arn_and_account() -> None:
    permissions = _of_type(_resources(), "AWS::Lambda::Permission")

    for name, permission in permissions.items():
        assert {"SourceArn", "SourceAccount"} <= set(permission["Properties"]), name


def test_dead_letter_retention_matches_the_local_stack() -> None:
    resources = _resources()
    assert resources["OtaDlq"]["Properties"]["MessageRetentionPeriod"] == 1_209_600
    assert resources["IngestDlq"]["Properties"]["MessageRetentionPeriod"] == 1_209_600
    rule = resources["TelemetryDlqBucket"]["Properties"]["LifecycleConfiguration"]["Rules"][0]
    assert rule["ExpirationInDays"] == 90
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    assert resources["SigningKey"]["Properties"]["KeySpec"] == "ECC_NIST_P256"


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_the_rule_sql_builds_the_event_the_gateway_builds(rule: Rule) -> None:
    sql = _topic_rule(_resources(), rule)["Sql"]
    topic = rule.topic_filter.replace("+", "eu-west-1", 1).replace("+", "VIN-1HGBH41JXMN109186", 1)
    local = build_event(rule=rule.name, topic=topic, payload=b"x", qos=1, properties={})

    aliases = re.findall(r" AS (\S+?)(?:,| FROM)", sql)

    # the same top-level keys as the gateway's event, no nested (dotted) alias
    assert sorted(aliases) == sorted(local)
    assert not any("." in alias for alias in aliases)
    # MQTT 5 properties as an object literal of the JSON keys the handlers read
    literal = re.search(r"\{(.*)\} AS properties", sql)
    assert literal is not None
    keys = re.findall(r"'([a-z_0-9]+)': get_mqtt_property\('([a-z_]+)'\)", literal.group(1))
    assert {key for key, _ in keys} == {CONTENT_TYPE, CORRELATION_DATA}
    assert dict(keys)[CONTENT_TYPE] == "content_type"
    # get_user_properties takes a key; no handler reads an inbound user property
    assert "get_user_properties" not in sql
