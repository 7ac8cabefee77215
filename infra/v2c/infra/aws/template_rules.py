"""The gateway's rules table as AWS IoT topic rules in `template.yaml`.

A queue-fed rule (all production rules, ADR 0009) becomes an IoT topic rule
with an SQS action into its queue and an event source mapping that hands its
function batches with partial-batch responses; any other rule an IoT topic
rule invoking its function, through a permission scoped to that rule. Either
way the error action is the rule's dead-letter store.

The rule SQL builds the same event the local gateway builds
(`v2c.contract.events.build_event`): base64 payload, topic, region and vehicle
id from the topic levels, MQTT 5 properties, receive time. Properties are the
ones the handlers read (content type; correlation data kept for a dead-letter
replay), built as an object literal (AWS IoT SQL "Literals"; an Undefined
value is left out of an object, as the gateway leaves out an absent
property). User properties are not forwarded: no handler reads an inbound
one, and `get_user_properties` takes the key to read.
"""

from __future__ import annotations

import math
from typing import Any, Final

from v2c.contract.errors import ConfigurationError
from v2c.contract.mqtt_properties import CONTENT_TYPE, CORRELATION_DATA
from v2c.gateway.rules import EventSource, Rule
from v2c.infra.aws.resources import ingest_queue_name
from v2c.infra.aws.template_iam import dead_letter_role, iot_rule_role
from v2c.infra.aws.template_storage import OTA_DLQ, arn, bucket_logicals, logical, queue_logicals
from v2c.infra.names import ResourceNames

INGEST_ROLE: Final = "IotIngestRole"
DEAD_LETTER_ROLE: Final = "IotRuleRole"

# Lambda takes an SQS mapping's MaximumBatchingWindowInSeconds in whole
# seconds (0-300) and refuses less than 1 s when BatchSize is above 10, while
# the gateway waits `rule.batch_window_ms` (20 ms) for a batch to fill. So in
# AWS a batch that does not fill may wait up to 1 s where the local gateway
# waits 20 ms: a difference in latency, not in what is delivered, shown by
# test_template_matches_rules.
MIN_WINDOW_S_ABOVE_10_RECORDS: Final = 1
MAX_WINDOW_S: Final = 300
# The records of a batch the function names in `batchItemFailures` are
# delivered again; without this, any failure would redeliver the whole batch.
PARTIAL_BATCH_RESPONSE: Final = "ReportBatchItemFailures"


def batching_window_s(rule: Rule) -> int:
    """The mapping's MaximumBatchingWindowInSeconds for the gateway's window:
    rounded up to what Lambda accepts (see MIN_WINDOW_S_ABOVE_10_RECORDS)."""
    seconds = math.ceil(rule.batch_window_ms / 1000)
    if rule.batch_size > 10:
        seconds = max(seconds, MIN_WINDOW_S_ABOVE_10_RECORDS)
    if seconds > MAX_WINDOW_S:
        raise ConfigurationError(f"rule {rule.name}: Lambda waits at most {MAX_WINDOW_S}s")
    return seconds


def lambda_handler_path(rule: Rule) -> str:
    """`package.module:function` → Lambda's `package.module.function`."""
    module, _, function = rule.handler.partition(":")
    return f"{module}.{function}"


# The MQTT 5 properties the rule forwards, by the event's JSON key
# (`v2c.contract.mqtt_properties`) and IoT SQL's property name.
FORWARDED_PROPERTIES: Final = (
    (CONTENT_TYPE, "content_type"),
    (CORRELATION_DATA, "correlation_data"),
)


def rule_sql(rule: Rule) -> str:
    """IoT SQL over trusted, code-defined rules (names and filters validated by Rule)."""
    properties = ", ".join(
        f"'{key}': get_mqtt_property('{name}')" for key, name in FORWARDED_PROPERTIES
    )
    return (
        "SELECT encode(*, 'base64') AS payload, topic() AS topic, topic(3) AS region, "  # noqa: S608
        "topic(4) AS vehicle_id, topic(5) AS domain, topic(6) AS kind, "
        f"{min(rule.qos, 1)} AS qos, timestamp() AS received_at, '{rule.name}' AS rule, "
        f"{{{properties}}} AS properties "
        f"FROM '{rule.topic_filter}'"
    )


def _error_action(rule: Rule, names: ResourceNames) -> dict[str, Any]:
    role_arn = arn(DEAD_LETTER_ROLE)
    if rule.dlq == "ota":
        return {"Sqs": {"QueueUrl": {"Ref": OTA_DLQ}, "RoleArn": role_arn, "UseBase64": True}}
    return {
        "S3": {
            "BucketName": {"Ref": bucket_logicals(names)[names.telemetry_dlq_bucket]},
            "Key": f"dlq/{rule.dlq}/iot-error/${{newuuid()}}.json",
            "RoleArn": role_arn,
        }
    }


def _feed_queue(resources: dict[str, Any], rule: Rule, queue: str, function: str) -> dict[str, Any]:
    """Let `function` read `queue` in the rule's batches; returns the topic
    rule's action that fills the queue. The mapping is a plain
    EventSourceMapping, not a SAM `SQS` event: SAM would attach
    AWSLambdaSQSQueueExecutionRole, which reads every queue of the account."""
    resources[logical(rule.name, "QueueMapping")] = {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "EventSourceArn": arn(queue),
            "FunctionName": {"Ref": function},
            "BatchSize": rule.batch_size,
            "MaximumBatchingWindowInSeconds": batching_window_s(rule),
            "FunctionResponseTypes": [PARTIAL_BATCH_RESPONSE],
            **(
                {"ScalingConfig": {"MaximumConcurrency": rule.max_concurrency}}
                if rule.max_concurrency is not None
                else {}
            ),
        },
    }
    # UseBase64 false: the message body is the rule SQL's JSON, the event the
    # handlers read from each record (`v2c.contract.queue_event.record_event`).
    return {"Sqs": {"QueueUrl": {"Ref": queue}, "RoleArn": arn(INGEST_ROLE), "UseBase64": False}}


def topic_rules(
    resources: dict[str, Any],
    rules: tuple[Rule, ...],
    names: ResourceNames,
    functions: dict[str, str],
) -> None:
    """The topic rules, their roles and how each reaches its function
    (`functions`: the function's logical id by its Lambda handler path)."""
    queues = queue_logicals(names, rules)
    fed = [queues[ingest_queue_name(names, r)] for r in rules if r.source is EventSource.SQS]
    if fed:
        # The topic rules may put messages on exactly their queues, nothing else.
        resources[INGEST_ROLE] = iot_rule_role(
            "ingest-queues", ("sqs:SendMessage",), [arn(q) for q in fed]
        )
    resources[DEAD_LETTER_ROLE] = dead_letter_role(names)
    for rule in rules:
        target = functions[lambda_handler_path(rule)]
        rule_id = logical(rule.name, "TopicRule")
        if rule.source is EventSource.SQS:
            action = _feed_queue(resources, rule, queues[ingest_queue_name(names, rule)], target)
        else:
            action = {"Lambda": {"FunctionArn": arn(target)}}
            resources[logical(rule.name, "InvokePermission")] = {
                "Type": "AWS::Lambda::Permission",
                "Properties": {
                    "Action": "lambda:InvokeFunction",
                    "FunctionName": {"Ref": target},
                    "Principal": "iot.amazonaws.com",
                    # This rule of this account only: no other account's rule
                    # (or another rule here) may invoke the function.
                    "SourceArn": arn(rule_id),
                    "SourceAccount": {"Ref": "AWS::AccountId"},
                },
            }
        resources[rule_id] = {
            "Type": "AWS::IoT::TopicRule",
            "Properties": {
                "TopicRulePayload": {
                    "AwsIotSqlVersion": "2016-03-23",
                    "RuleDisabled": False,
                    "Sql": rule_sql(rule),
                    "Actions": [action],
                    "ErrorAction": _error_action(rule, names),
                }
            },
        }
