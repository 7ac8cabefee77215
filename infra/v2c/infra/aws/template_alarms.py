"""The CloudWatch alarms of `template.yaml`: the AWS deployment's counterpart of
the Prometheus alert rules (`v2c/infra/observability/v2c.rules.yml`).

In AWS nothing scrapes `/metrics`: the handlers' recording functions also emit
EMF (namespace `v2c`, dimension `service`), and the services AWS runs for us
publish their own metrics (SQS, Lambda, IoT Core). Each alarm is over one of
those; a ratio is metric math guarded so that no traffic is 0 or 1, never a
division by zero. Two OTA alerts have no metric in CloudWatch at all (a stall
and a failed canary gate are decisions, not counts): the functions log them
as `OTA alert <name>` (`v2c.handlers.ota.metrics`), and a metric filter on
each OTA function's log group counts those lines.

`ALERT_ALARMS` maps an alert of the rules file to the alarms that stand for
it; an alert missing from it has its reason in docs/observability.md
("CloudWatch:" under its heading). `tests/unit/test_alarms_cover_alerts.py`
holds the two to each other.

Every alarm notifies one SNS topic: the stack's own `AlarmTopic`, or the
topic named by the `AlarmTopicArn` parameter (an existing on-call topic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from v2c.infra.aws.template_iam import FunctionAccess
from v2c.infra.aws.template_storage import INGEST_DLQ, OTA_DLQ, skip

NAMESPACE: Final = "v2c"  # the EMF namespace (v2c.handlers.telemetry.emf.NAMESPACE)
ALARM_TOPIC: Final = "AlarmTopic"
ALARM_TOPIC_POLICY: Final = "AlarmTopicPolicy"
ALARM_TOPIC_PARAMETER: Final = "AlarmTopicArn"
CREATE_ALARM_TOPIC: Final = "CreateAlarmTopic"
RUNBOOK: Final = "docs/observability.md#"
DLQ_BACKLOG: Final = 1000  # messages (the DLQBacklog rule's threshold)
PERIOD_S: Final = 300
HOUR_S: Final = 3600  # the expiry pass runs hourly

OTA_DLQ_ALARM: Final = "OtaDlqBacklogAlarm"
INGEST_DLQ_ALARM: Final = "IngestDlqBacklogAlarm"

# Alerts of v2c.rules.yml -> the alarms (logical ids) that stand for them here.
ALERT_ALARMS: Final[Mapping[str, tuple[str, ...]]] = {
    "HighOTAFailureRate": ("OtaFailureRateAlarm",),
    "HighOTARollbackRate": ("OtaRollbackRateAlarm",),
    "HSMSigningServiceDown": ("SigningFailuresAlarm",),
    "SignatureVerificationFailure": ("SignatureVerificationFailuresAlarm",),
    "OTACampaignStalled": ("CampaignStalledAlarm",),
    "CanaryDeploymentFailure": ("CanaryGateFailedAlarm",),
    "DLQBacklog": (OTA_DLQ_ALARM, INGEST_DLQ_ALARM),
    "BatchDecompressionFailure": ("BatchDecompressionAlarm",),
    # Expiring within 7 days less the expired (the pass writes both on one
    # EMF line), and the expired alone.
    "CertificateExpiringSoon": ("CertificatesExpiringAlarm",),
    "CertificateExpired": ("CertificatesExpiredAlarm",),
    # IoT Core's own counts of what vehicles try: the broker's side of the
    # simulator's connection and publish counters.
    "LowConnectionSuccessRate": ("IotConnectSuccessRateAlarm",),
    "HighTelemetryFailureRate": ("IotPublishErrorRateAlarm",),
}


@dataclass(frozen=True, slots=True)
class LogAlert:
    """An OTA alert counted from the functions' log lines."""

    alert: str  # the name `PrometheusAlerts.alert` is called with
    rule: str  # the alert of v2c.rules.yml it stands for
    metric: str  # the CloudWatch metric its filters count into
    alarm: str  # the alarm's logical id

    @property
    def pattern(self) -> str:
        # A quoted phrase matches plain-text and JSON log lines alike.
        return f'"OTA alert {self.alert}"'


LOG_ALERTS: Final = (
    LogAlert(
        "campaign_stalled", "OTACampaignStalled", "CampaignStalledAlerts", "CampaignStalledAlarm"
    ),
    LogAlert(
        "canary_gate_failed",
        "CanaryDeploymentFailure",
        "CanaryGateFailedAlerts",
        "CanaryGateFailedAlarm",
    ),
)


# -- building blocks ---------------------------------------------------------------


def _topic() -> dict[str, Any]:
    return {"Fn::If": [CREATE_ALARM_TOPIC, {"Ref": ALARM_TOPIC}, {"Ref": ALARM_TOPIC_PARAMETER}]}


def _dims(dimensions: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"Name": k, "Value": v} for k, v in dimensions.items()]


def _stat(
    id_: str,
    namespace: str,
    metric: str,
    dimensions: Mapping[str, Any],
    stat: str = "Sum",
    period_s: int = PERIOD_S,
) -> dict[str, Any]:
    return {
        "Id": id_,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": _dims(dimensions),
            },
            "Period": period_s,
            "Stat": stat,
        },
        "ReturnData": False,
    }


def _expr(id_: str, expression: str, label: str) -> dict[str, Any]:
    return {"Id": id_, "Expression": expression, "Label": label, "ReturnData": True}


def alarm(
    alert: str,
    description: str,
    *,
    name: str = "",
    threshold: float,
    comparison: str = "GreaterThanThreshold",
    periods: int = 1,
    single: Mapping[str, Any] | None = None,
    metrics: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """One alarm that notifies the topic on alarm and on recovery. `alert`:
    the runbook heading (and the name, unless `name` tells one alarm of
    several apart); `single`: the properties of a one-metric alarm;
    `metrics`: a metric-math alarm. Missing data is not breaching: no
    traffic is no alarm."""
    props: dict[str, Any] = {
        "AlarmName": {"Fn::Sub": f"${{AWS::StackName}}-{name or alert}"},
        "AlarmDescription": f"{description} Runbook: {RUNBOOK}{alert.lower()}",
        "ComparisonOperator": comparison,
        "Threshold": threshold,
        "EvaluationPeriods": periods,
        "DatapointsToAlarm": periods,
        "TreatMissingData": "notBreaching",
        "AlarmActions": [_topic()],
        "OKActions": [_topic()],
    }
    if single is not None:
        props.update(single)
    else:
        props["Metrics"] = list(metrics)
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": props}


def _emf(metric: str, service: str, stat: str = "Sum", period_s: int = 60) -> dict[str, Any]:
    return {
        "Namespace": NAMESPACE,
        "MetricName": metric,
        "Dimensions": _dims({"service": service}),
        "Statistic": stat,
        "Period": period_s,
    }


# -- the OTA outcomes (EMF, service=ota) ---------------------------------------------

_OUTCOMES: Final = {
    "completed": "UpdatesCompleted",
    "failed": "UpdatesFailed",
    "rolledback": "UpdatesRolledBack",
    "timedout": "UpdatesTimedOut",
}
# Terminal outcomes the rates divide by; cancelled updates are nobody's failure.
_ENDED: Final = "FILL(completed,0)+FILL(failed,0)+FILL(rolledback,0)+FILL(timedout,0)"


def _outcome_rate(alert: str, failures: str, threshold: float, periods: int, what: str) -> Any:
    metrics = [_stat(k, NAMESPACE, v, {"service": "ota"}) for k, v in _OUTCOMES.items()]
    metrics.append({"Id": "ended", "Expression": _ENDED, "ReturnData": False})
    metrics.append(_expr("rate", f"IF(ended > 0, ({failures}) / ended, 0)", what))
    return alarm(
        alert,
        f"{what} above {threshold:.0%} of the OTA updates that ended.",
        threshold=threshold,
        periods=periods,
        metrics=metrics,
    )


def ota_alarms() -> dict[str, Any]:
    fail = "FILL(failed,0)+FILL(timedout,0)"
    return {
        "OtaFailureRateAlarm": _outcome_rate(
            "HighOTAFailureRate", fail, 0.05, 1, "Failed or timed-out updates"
        ),
        # Spec 000: for 10 m, i.e. two 5-minute periods.
        "OtaRollbackRateAlarm": _outcome_rate(
            "HighOTARollbackRate", "FILL(rolledback,0)", 0.03, 2, "Rolled-back updates"
        ),
        "SigningFailuresAlarm": alarm(
            "HSMSigningServiceDown",
            "Manifest signing failed for good (KMS or HSM unreachable): campaigns cannot start.",
            threshold=0,
            single=_emf("SigningFailures", "signing"),
        ),
        "SignatureVerificationFailuresAlarm": alarm(
            "SignatureVerificationFailure",
            "SECURITY: vehicles rejected an update's signature.",
            threshold=0,
            single=_emf("SignatureVerificationFailures", "ota"),
        ),
        "CertificatesExpiringAlarm": alarm(
            "CertificateExpiringSoon",
            "Active vehicles whose certificate expires within 7 days and has not expired.",
            threshold=0,
            metrics=_certificates_expiring(),
        ),
        "CertificatesExpiredAlarm": alarm(
            "CertificateExpired",
            "Active vehicles whose certificate has expired: the broker refuses them.",
            threshold=0,
            single=_emf("CertificatesExpired", "vehicles", "Maximum", HOUR_S),
        ),
    }


def telemetry_alarms() -> dict[str, Any]:
    """Batches the batch function could not open, over the batches it handled
    (its EMF line per invocation, `service=telemetry`; spec 001: > 0.1 % for 5 m)."""
    telemetry = {"service": "telemetry"}
    return {
        "BatchDecompressionAlarm": alarm(
            "BatchDecompressionFailure",
            "Telemetry batches that could not be checked or decompressed, above 0.1 %.",
            threshold=0.001,
            metrics=[
                _stat("errors", NAMESPACE, "BatchDecompressionErrors", telemetry),
                _stat("batches", NAMESPACE, "TelemetryBatches", telemetry),
                _expr(
                    "share",
                    "IF(batches > 0, FILL(errors,0) / batches, 0)",
                    "Batches not opened / batches",
                ),
            ],
        ),
    }


def _certificates_expiring() -> list[dict[str, Any]]:
    """The 7-day count includes the expired (as the Prometheus gauge does):
    less those, so one parked vehicle with a lapsed certificate does not
    hold this alarm on for good (CertificatesExpiredAlarm has it)."""
    vehicles = {"service": "vehicles"}
    return [
        _stat("within7", NAMESPACE, "CertificatesExpiringWithin7Days", vehicles, "Maximum", HOUR_S),
        _stat("expired", NAMESPACE, "CertificatesExpired", vehicles, "Maximum", HOUR_S),
        _expr("soon", "FILL(within7,0) - FILL(expired,0)", "Expiring within 7 days, not expired"),
    ]


def log_alerts(ota_functions: Sequence[FunctionAccess]) -> dict[str, Any]:
    """A metric filter per OTA alert and function log group, and the alarm
    over each alert's count."""
    resources: dict[str, Any] = {}
    for log_alert in LOG_ALERTS:
        for access in ota_functions:
            resources[f"{access.logical}{log_alert.metric}Filter"] = {
                "Type": "AWS::Logs::MetricFilter",
                "Properties": {
                    "LogGroupName": {"Ref": access.log_group},
                    "FilterPattern": log_alert.pattern,
                    "MetricTransformations": [
                        {
                            "MetricNamespace": NAMESPACE,
                            "MetricName": log_alert.metric,
                            "MetricValue": "1",
                        }
                    ],
                },
            }
        resources[log_alert.alarm] = alarm(
            log_alert.rule,
            f"An OTA function logged 'OTA alert {log_alert.alert}'.",
            threshold=0,
            single={
                "Namespace": NAMESPACE,
                "MetricName": log_alert.metric,
                "Statistic": "Sum",
                "Period": 60,
            },
        )
    return resources


# -- native AWS metrics --------------------------------------------------------------


def dlq_alarms() -> dict[str, Any]:
    """Messages waiting in each SQS dead-letter queue (for 10 m, as the rule)."""
    return {
        alarm_id: alarm(
            "DLQBacklog",
            f"More than {DLQ_BACKLOG} messages wait in {queue} for review or replay.",
            name=f"DLQBacklog-{queue}",
            threshold=DLQ_BACKLOG,
            periods=2,
            single={
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": _dims({"QueueName": {"Fn::GetAtt": [queue, "QueueName"]}}),
                "Statistic": "Maximum",
                "Period": PERIOD_S,
            },
        )
        for alarm_id, queue in ((OTA_DLQ_ALARM, OTA_DLQ), (INGEST_DLQ_ALARM, INGEST_DLQ))
    }


_MQTT: Final = {"Protocol": "MQTT"}


def iot_alarms() -> dict[str, Any]:
    """IoT Core's message broker metrics (namespace AWS/IoT, Protocol=MQTT)."""
    connect = [
        _stat(k.lower(), "AWS/IoT", f"Connect.{k}", _MQTT)
        for k in ("Success", "AuthError", "ClientError", "ServerError", "Throttle")
    ]
    c_all = "FILL(success,0)+FILL(autherror,0)+FILL(clienterror,0)+FILL(servererror,0)"
    c_all += "+FILL(throttle,0)"
    connect.append({"Id": "attempts", "Expression": c_all, "ReturnData": False})
    connect.append(
        _expr("rate", "IF(attempts > 0, FILL(success,0) / attempts, 1)", "Connect success rate")
    )
    publish = [
        _stat(k.lower(), "AWS/IoT", f"PublishIn.{k}", _MQTT)
        for k in ("Success", "ClientError", "ServerError", "Throttle")
    ]
    p_err = "FILL(clienterror,0)+FILL(servererror,0)+FILL(throttle,0)"
    publish.append({"Id": "errors", "Expression": p_err, "ReturnData": False})
    publish.append({"Id": "publishes", "Expression": "FILL(success,0)+errors", "ReturnData": False})
    publish.append(_expr("rate", "IF(publishes > 0, errors / publishes, 0)", "Publish error rate"))
    return {
        "IotConnectSuccessRateAlarm": alarm(
            "LowConnectionSuccessRate",
            "Below 99% of the MQTT connection attempts IoT Core saw succeeded (10 minutes).",
            threshold=0.99,
            comparison="LessThanThreshold",
            periods=2,
            metrics=connect,
        ),
        "IotPublishErrorRateAlarm": alarm(
            "HighTelemetryFailureRate",
            "IoT Core refused or failed more than 1% of the MQTT publishes it received.",
            threshold=0.01,
            metrics=publish,
        ),
        # Spec 001 "SECURITY ALERT: Unauthorized publish": a certificate that
        # publishes outside its own topics (the policy denies it).
        "IotUnauthorizedPublishAlarm": alarm(
            "IotUnauthorizedPublish",
            "SECURITY: a vehicle published where its IoT policy does not allow it.",
            threshold=0,
            single={
                "Namespace": "AWS/IoT",
                "MetricName": "PublishIn.AuthError",
                "Dimensions": _dims(_MQTT),
                "Statistic": "Sum",
                "Period": PERIOD_S,
            },
        ),
    }


LAMBDA_ERROR_RATE: Final = 0.01  # spec 001: "Error Rate > 1%"


def lambda_alarms(functions: Sequence[FunctionAccess]) -> dict[str, Any]:
    """Each function's error rate (unhandled exceptions, timeouts, out of
    memory) and throttles. A record a queue-fed function reports failed is
    not a Lambda error: those end in the ingest DLQ, which has its alarm."""
    resources: dict[str, Any] = {}
    for access in functions:
        name = {"FunctionName": {"Ref": access.logical}}
        metrics = [
            _stat("errors", "AWS/Lambda", "Errors", name),
            _stat("invocations", "AWS/Lambda", "Invocations", name),
            _expr(
                "rate",
                "IF(FILL(invocations,0) > 0, FILL(errors,0) / invocations, 0)",
                "Error rate",
            ),
        ]
        resources[f"{access.logical}ErrorRateAlarm"] = alarm(
            "LambdaErrors",
            f"{access.name}: more than 1% of its invocations failed.",
            name=f"LambdaErrors-{access.logical}",
            threshold=LAMBDA_ERROR_RATE,
            metrics=metrics,
        )
        resources[f"{access.logical}ThrottlesAlarm"] = alarm(
            "LambdaThrottles",
            f"{access.name}: invocations throttled (the account's concurrency is exhausted).",
            name=f"LambdaThrottles-{access.logical}",
            threshold=0,
            single={
                "Namespace": "AWS/Lambda",
                "MetricName": "Throttles",
                "Dimensions": _dims(name),
                "Statistic": "Sum",
                "Period": PERIOD_S,
            },
        )
    return resources


# -- the topic -----------------------------------------------------------------------


def parameters() -> dict[str, Any]:
    return {
        ALARM_TOPIC_PARAMETER: {
            "Type": "String",
            "Default": "",
            "AllowedPattern": r"^$|^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}$",
            "Description": "An existing SNS topic the alarms notify (empty: the stack makes "
            "its own AlarmTopic; subscribe the on-call address to it)",
        }
    }


def conditions() -> dict[str, Any]:
    return {CREATE_ALARM_TOPIC: {"Fn::Equals": [{"Ref": ALARM_TOPIC_PARAMETER}, ""]}}


def topic() -> dict[str, Any]:
    return {
        ALARM_TOPIC: {
            "Type": "AWS::SNS::Topic",
            "Condition": CREATE_ALARM_TOPIC,
            "Properties": {"DisplayName": "v2c alarms"},
            "Metadata": skip(
                (
                    "CKV_AWS_26",
                    "CloudWatch cannot publish to a topic under the AWS-managed SNS key, and "
                    "an alarm notification holds only the alarm's name, state and threshold",
                ),
            ),
        },
        ALARM_TOPIC_POLICY: {
            "Type": "AWS::SNS::TopicPolicy",
            "Condition": CREATE_ALARM_TOPIC,
            "Properties": {
                "Topics": [{"Ref": ALARM_TOPIC}],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "CloudWatchAlarmsOfThisAccount",
                            "Effect": "Allow",
                            "Principal": {"Service": "cloudwatch.amazonaws.com"},
                            "Action": "sns:Publish",
                            "Resource": {"Ref": ALARM_TOPIC},
                            "Condition": {
                                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
                            },
                        }
                    ],
                },
            },
        },
    }


def output() -> dict[str, Any]:
    return {"Value": _topic(), "Description": "The SNS topic every alarm notifies"}


def alarms(
    functions: Sequence[FunctionAccess], ota_functions: Sequence[FunctionAccess]
) -> dict[str, Any]:
    """The topic, every alarm and the log metric filters. `ota_functions`:
    those that run the OTA services and so may log an OTA alert."""
    resources = topic()
    resources.update(ota_alarms())
    resources.update(telemetry_alarms())
    resources.update(log_alerts(ota_functions))
    resources.update(dlq_alarms())
    resources.update(iot_alarms())
    resources.update(lambda_alarms(functions))
    return resources
