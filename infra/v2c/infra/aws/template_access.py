"""Who needs what: each function's access profile, before it becomes IAM.

`template_iam` turns a `FunctionAccess` into one role of named resources;
this module says what goes into each one, from what the function's code
reaches (`v2c.handlers.*.config`): the OTA services, the telemetry store,
the dead-letter service, and the checkov findings that do not apply to a
function, each with its reason. Kept apart so the list of needs reads as
one table and the IAM rendering as one mechanism.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from v2c.contract.errors import ConfigurationError
from v2c.contract.topics import Domain
from v2c.gateway.rules import Rule
from v2c.infra.aws.template_iam import (
    INGEST_DLQ_ADMIN,
    OBJECT_READ,
    OBJECT_UPLOAD,
    OBJECT_WRITE,
    QUEUE_ADMIN,
    QUEUE_SEND,
    READ,
    TELEMETRY_WRITE,
    WRITE,
    ObjectGrant,
    QueueGrant,
    TableGrant,
)
from v2c.infra.device_policy import DOWNLINK
from v2c.infra.names import ResourceNames


def ota_grants(names: ResourceNames, *, api: bool) -> dict[str, Any]:
    """What the OTA services (`v2c.handlers.ota.config.build_services`) reach:
    every OTA table; firmware only read, but by the API; in the firmware
    bucket the packages (read: presigned URLs), the campaign plans and the
    fleet index; the OTA DLQ for failed notifications and refused reports;
    the key, the bus and `ota/available` of every vehicle."""
    firmware_bucket = names.firmware_bucket
    objects = (
        (ObjectGrant(firmware_bucket, "", OBJECT_UPLOAD),)
        if api
        else (
            ObjectGrant(firmware_bucket, "firmware/", OBJECT_READ),
            ObjectGrant(firmware_bucket, "campaign-plans/", OBJECT_WRITE),
            ObjectGrant(firmware_bucket, "fleet-index/", OBJECT_WRITE),
        )
    )
    # The API's vehicle inventory reads when each vehicle was last heard
    # from in the telemetry records (`v2c.handlers.vehicles.sightings`).
    sightings = (TableGrant(names.telemetry_table, ("dynamodb:Query",)),) if api else ()
    return {
        "tables": (
            TableGrant(names.campaigns_table, WRITE),
            TableGrant(names.vehicle_updates_table, WRITE),
            TableGrant(names.rollbacks_table, WRITE),
            TableGrant(names.vehicle_registry_table, WRITE),
            TableGrant(names.firmware_table, WRITE if api else READ),
            *sightings,
        ),
        "objects": objects,
        "queues": (QueueGrant(names.ota_dlq_queue, QUEUE_SEND),),
        "sign": True,
        "put_events": True,
        "publish": ((Domain.OTA, "available"),),
    }


def telemetry_grants(names: ResourceNames) -> dict[str, Any]:
    """The telemetry service (`v2c.handlers.telemetry.config.build_service`):
    its records, the registry read, its DLQ objects, the archive stream."""
    return {
        "tables": (
            TableGrant(names.telemetry_table, TELEMETRY_WRITE),
            TableGrant(names.vehicle_registry_table, READ),
        ),
        "objects": (ObjectGrant(names.telemetry_dlq_bucket, "dlq/", ("s3:PutObject",)),),
        "timeseries": True,
    }


def certificate_grants(names: ResourceNames) -> dict[str, Any]:
    """The rotation service (`v2c.handlers.vehicles.rotation_lambda`): the
    registry (conditional writes; a Scan for the expiry pass), AWS IoT's
    certificate calls of rotation only (`template_iam.ROTATION_THING_ACTIONS`:
    the issuer makes sure of the thing before CreateCertificateFromCsr and
    attaches; the revocation reads, revokes and detaches the old certificate;
    driven by vehicle input, it deletes no thing and lists no principals),
    the OTA DLQ for an answer it could not publish, and `certificate/issued`
    of every vehicle."""
    return {
        "tables": (TableGrant(names.vehicle_registry_table, WRITE),),
        "queues": (QueueGrant(names.ota_dlq_queue, QUEUE_SEND),),
        "rotation": True,
        "publish": ((Domain.CERTIFICATE, "issued"),),
    }


# Which grants each rule handler's function needs (a rule added with a new
# handler must say so here: no default access).
RULE_PROFILES: Final = {
    "v2c.handlers.ota_status:lambda_handler": "ota",
    "v2c.handlers.telemetry_ingest:lambda_handler": "telemetry",
    "v2c.handlers.telemetry_batch:lambda_handler": "telemetry",
    "v2c.handlers.vehicle_certificates:lambda_handler": "certificates",
}

_VPC = (
    "CKV_AWS_117",
    "reaches only AWS APIs over TLS, authorised by IAM; a VPC would add NAT or "
    "endpoints and there is no private resource to reach",
)
_ENV = ("CKV_AWS_173", "the environment holds resource names only, no secret")


def rule_skips() -> tuple[tuple[str, str], ...]:
    return (
        _VPC,
        _ENV,
        (
            "CKV_AWS_116",
            "invoked synchronously by its SQS mapping: a failed record goes back to the "
            "queue, and to the queue's dead-letter queue after maxReceiveCount",
        ),
        ("CKV_AWS_115", "its mapping's ScalingConfig.MaximumConcurrency bounds it"),
    )


def rule_access(rule: Rule, names: ResourceNames, env: Mapping[str, Any]) -> dict[str, Any]:
    """The grants of the function a rule's handler runs in."""
    profile = RULE_PROFILES.get(rule.handler)
    if profile is None:
        raise ConfigurationError(
            f"rule {rule.name}: no access profile for {rule.handler} (template_iam.RULE_PROFILES)"
        )
    grants = (
        ota_grants(names, api=False)
        if profile == "ota"
        else certificate_grants(names)
        if profile == "certificates"
        else telemetry_grants(names)
    )
    return {**grants, "env": env, "skips": rule_skips()}


def dlq_grants(
    names: ResourceNames, rule_functions: tuple[str, ...], ingest_queues: tuple[str, ...]
) -> dict[str, Any]:
    """What the dead-letter service (`v2c.handlers.dlq.config.build_service`)
    reaches: the telemetry DLQ's objects, the OTA DLQ, the ingest DLQ and the
    ingest queues its records replay onto (`dlq.ingest`), the rules'
    functions an inbound record replays into (`LambdaRedriver`), and the
    downlink topics an outbound record is published to again (`IotDataRedriver`)."""
    downlink = tuple((domain, kind) for domain, kinds in DOWNLINK.items() for kind in kinds)
    return {
        "objects": (ObjectGrant(names.telemetry_dlq_bucket, "dlq/", OBJECT_WRITE),),
        "queues": (
            QueueGrant(names.ota_dlq_queue, QUEUE_ADMIN),
            QueueGrant(names.ingest_dlq_queue, INGEST_DLQ_ADMIN),
            *(QueueGrant(queue, QUEUE_SEND) for queue in ingest_queues),
        ),
        "invoke": rule_functions,
        "publish": downlink,
    }


def _union(*groups: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(item for group in groups for item in group))


def merge_grants(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Two services' grants in one function: tuples joined without repeats,
    a queue granted by both once with the actions of both, flags or-ed."""
    merged = dict(first)
    for key, value in second.items():
        if key not in merged:
            merged[key] = value
        elif key == "queues":
            actions: dict[str, tuple[str, ...]] = {}
            for grant in (*merged[key], *value):
                actions[grant.queue] = _union(actions.get(grant.queue, ()), grant.actions)
            merged[key] = tuple(QueueGrant(queue, acts) for queue, acts in actions.items())
        elif isinstance(value, tuple):
            merged[key] = _union(merged[key], value)
        else:
            merged[key] = merged[key] or value
    return merged


def api_access(
    names: ResourceNames, env: Mapping[str, Any], monitor: str, dlq: Mapping[str, Any]
) -> dict[str, Any]:
    """The OTA services, the planner it invokes, onboarding, and the
    dead-letter service behind `/api/v1/dlq` (`dlq`: `dlq_grants`)."""
    return {
        **merge_grants(ota_grants(names, api=True), {**dlq, "invoke": (monitor, *dlq["invoke"])}),
        "env": env,
        "onboarding": True,
        "skips": (
            _VPC,
            _ENV,
            ("CKV_AWS_116", "invoked synchronously by API Gateway: the caller gets the error"),
            (
                "CKV_AWS_115",
                "the API stage's throttling bounds it; reserved concurrency would come out of "
                "the account's pool (an account limited to 10 cannot reserve any)",
            ),
        ),
    }


def monitor_access(names: ResourceNames, env: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **ota_grants(names, api=False),
        "env": env,
        "skips": (
            _VPC,
            _ENV,
            (
                "CKV_AWS_116",
                "each one-minute pass redoes what a failed one missed, and re-plans a campaign "
                "a failed planner invocation left in `planning`",
            ),
            ("CKV_AWS_115", "one schedule tick a minute, plus the API's planner invocations"),
        ),
    }


def device_events_access(names: ResourceNames, env: Mapping[str, Any]) -> dict[str, Any]:
    """`v2c.handlers.ota_device_events`: the OTA services, to cancel a
    decommissioned vehicle's updates (an EventBridge rule on the v2c bus)."""
    return {
        **ota_grants(names, api=False),
        "env": env,
        "skips": (
            _VPC,
            _ENV,
            (
                "CKV_AWS_116",
                "the decommission request cancels the updates itself; this consumer is the "
                "idempotent backstop, and EventBridge retries it for 24 hours",
            ),
            ("CKV_AWS_115", "one event per decommissioned vehicle"),
        ),
    }


def dlq_admin_access(env: Mapping[str, Any], dlq: Mapping[str, Any]) -> dict[str, Any]:
    """`v2c.handlers.dlq_admin`: the dead-letter service (`dlq_grants`): list,
    show, replay and purge every DLQ."""
    return {
        **dlq,
        "env": env,
        "skips": (
            _VPC,
            _ENV,
            ("CKV_AWS_116", "invoked directly and synchronously by an operator"),
            ("CKV_AWS_115", "invoked by operators, one request at a time"),
        ),
    }
