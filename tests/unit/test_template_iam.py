"""template.yaml is least-privilege: one role per function, each statement on named ARNs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from v2c.contract.topics import VIN_PATTERN, Domain
from v2c.gateway.rules import RULES, Rule
from v2c.handlers.dlq import config as dlq_config
from v2c.handlers.vehicles.iot_issuer import IotCoreIssuer
from v2c.handlers.vehicles.ports import IssueRequest
from v2c.infra.aws.template import (
    TEMPLATE_PATH,
    function_accesses,
    lambda_handler_path,
    render,
)
from v2c.infra.aws.template_iam import CSR_WILDCARD, VEHICLE_THINGS, FunctionAccess
from v2c.infra.device_policy import DOWNLINK
from v2c.infra.names import ResourceNames

Resources = dict[str, Any]
NAMES = ResourceNames()
ACCESS = {access.logical: access for access in function_accesses()}
TELEMETRY = ("TelemetryFunction", "TelemetryBatchFunction")
OTA = ("OtaStatusFunction", "OtaApiFunction", "OtaMonitorFunction")
RULE_FUNCTIONS = (
    "OtaStatusFunction",
    "TelemetryFunction",
    "TelemetryBatchFunction",
    "VehicleCertificatesFunction",
)
# Issue certificates through AWS IoT: onboarding, and rotation over MQTT.
CERTIFICATE_ISSUERS = {"OtaApiFunction", "VehicleCertificatesFunction"}
ROTATION = "VehicleCertificatesFunction"
DLQ_SERVICE = ("DlqAdminFunction", "OtaApiFunction")  # `/api/v1/dlq` is the same service


def _resources() -> Resources:
    resources: Resources = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    return resources


def _of_type(resources: Resources, kind: str) -> Resources:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def _statements(resources: Resources, role: str) -> list[dict[str, Any]]:
    """A role's statements; a conditional one (Fn::If) as its true branch."""
    found = []
    for policy in resources[role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            found.append(statement["Fn::If"][1] if "Fn::If" in statement else statement)
    return found


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {action for s in statements for action in s["Action"]}


def test_every_function_of_the_template_is_in_the_access_table_and_nothing_else() -> None:
    functions = _of_type(_resources(), "AWS::Serverless::Function")

    assert set(functions) == set(ACCESS)
    for logical, function in functions.items():
        props = function["Properties"]
        assert props["FunctionName"] == ACCESS[logical].name
        assert props["Handler"] == ACCESS[logical].handler


@pytest.mark.parametrize("logical", TELEMETRY)
def test_telemetry_cannot_sign_publish_invoke_or_register_vehicles(logical: str) -> None:
    access = ACCESS[logical]
    statements = _statements(_resources(), access.role)

    assert (access.sign, access.publish, access.invoke) == (False, (), ())
    assert not access.issues_certificates
    assert not any(
        a.startswith(("kms:", "iot:", "lambda:", "events:")) for a in _actions(statements)
    )
    assert access.timeseries
    assert "firehose:PutRecordBatch" in _actions(statements)


@pytest.mark.parametrize("logical", OTA)
def test_ota_functions_sign_and_notify_on_ota_available_only(logical: str) -> None:
    access = ACCESS[logical]

    assert access.sign
    assert access.put_events
    assert access.publish[0] == (Domain.OTA, "available")
    if logical not in DLQ_SERVICE:
        assert access.publish == ((Domain.OTA, "available"),)
    assert not access.timeseries


def test_only_the_api_and_the_rotation_issue_certificates_and_the_api_plans() -> None:
    issuers = {logical for logical, access in ACCESS.items() if access.issues_certificates}
    onboarding = {logical for logical, access in ACCESS.items() if access.onboarding}
    rotation = {logical for logical, access in ACCESS.items() if access.rotation}
    invokers = {logical: access.invoke for logical, access in ACCESS.items() if access.invoke}

    assert issuers == CERTIFICATE_ISSUERS
    assert onboarding == {"OtaApiFunction"}
    assert rotation == {ROTATION}
    # the rule functions: where the dead-letter service replays inbound records
    assert invokers == {
        "OtaApiFunction": ("OtaMonitorFunction", *RULE_FUNCTIONS),
        "DlqAdminFunction": RULE_FUNCTIONS,
    }


@pytest.mark.parametrize("logical", DLQ_SERVICE)
def test_the_dlq_service_replays_into_the_rule_functions_by_their_names(logical: str) -> None:
    access = ACCESS[logical]
    prefix = access.env["RULE_FUNCTION_PREFIX"]
    env = {key: "x" for key in access.env}

    # every rule's function is found as prefix + rule name (`LambdaRedriver`)
    for rule in RULES:
        function = next(a for a in ACCESS.values() if a.handler == lambda_handler_path(rule))
        assert function.name == f"{prefix}{rule.name}"
    # every queue configured: the service does not start with one missing
    assert dlq_config.configured(env)
    downlink = {(domain, kind) for domain, kinds in DOWNLINK.items() for kind in kinds}
    assert set(access.publish) == downlink
    assert access.sign == (logical == "OtaApiFunction")
    assert access.issues_certificates == (logical in CERTIFICATE_ISSUERS)


@pytest.mark.parametrize("logical", DLQ_SERVICE)
def test_the_dlq_service_reads_the_ingest_dlq_and_replays_onto_the_ingest_queues_only(
    logical: str,
) -> None:
    access = ACCESS[logical]
    statements = _statements(_resources(), access.role)
    by_queue = {
        s["Resource"]["Fn::GetAtt"][0]: set(s["Action"])
        for s in statements
        if isinstance(s["Resource"], dict) and any(a.startswith("sqs:") for a in s["Action"])
    }
    ingest = {
        "OtaStatusQueue",
        "TelemetryQueue",
        "TelemetryBatchQueue",
        "VehicleCertificatesQueue",
    }

    # the mapping the replay reads is the one table of ingest queue names
    assert json.loads(access.env["INGEST_QUEUES"]) == NAMES.ingest_queues
    assert access.env["INGEST_DLQ_QUEUE_URL"] == {"Ref": "IngestDlq"}
    assert set(by_queue) == {"OtaDlq", "IngestDlq", *ingest}
    # only SQS's redrive writes the ingest DLQ; nothing reads an ingest queue here
    assert by_queue["IngestDlq"] == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    }
    for queue in ingest:
        assert by_queue[queue] == {"sqs:SendMessage", "sqs:GetQueueUrl"}


def test_no_statement_is_on_every_resource_but_the_csr_one_iam_requires() -> None:
    resources = _resources()
    wildcard = []
    for logical, role in _of_type(resources, "AWS::IAM::Role").items():
        for statement in _statements(resources, logical):
            resource = statement["Resource"]
            if resource == "*" or (isinstance(resource, list) and "*" in resource):
                wildcard.append((logical, statement["Action"]))
        assert "ManagedPolicyArns" not in role["Properties"], logical

    csr = ["iot:CreateCertificateFromCsr"]
    assert sorted(wildcard) == [(f"{f}Role", csr) for f in sorted(CERTIFICATE_ISSUERS)]
    for function in CERTIFICATE_ISSUERS:
        assert resources[f"{function}Role"]["Metadata"]["Comment"] == CSR_WILDCARD


def test_each_function_has_its_own_role_and_writes_only_its_own_log_group() -> None:
    resources = _resources()
    roles = set()
    for logical, access in ACCESS.items():
        props = resources[logical]["Properties"]
        role = props["Role"]["Fn::GetAtt"][0]
        log = _statements(resources, role)[0]

        assert "Policies" not in props  # no SAM-generated role (and its managed policies)
        assert log["Resource"] == {"Fn::GetAtt": [access.log_group, "Arn"]}
        group = resources[access.log_group]["Properties"]
        assert group["LogGroupName"] == f"/aws/lambda/{access.name}"
        roles.add(role)
    assert len(roles) == len(ACCESS)


def test_only_signing_functions_may_sign_and_only_with_the_stack_key() -> None:
    resources = _resources()
    for access in ACCESS.values():
        statements = resources[access.role]["Properties"]["Policies"][0]["PolicyDocument"]
        signing = [s for s in statements["Statement"] if "kms:Sign" in s["Action"]]
        assert len(signing) == (1 if access.sign else 0), access.logical
        if access.sign:
            assert signing[0]["Action"] == ["kms:Sign", "kms:GetPublicKey"]
            assert signing[0]["Resource"] == {"Fn::GetAtt": ["SigningKey", "Arn"]}


def test_vehicle_things_are_the_contracts_vehicle_ids() -> None:
    assert VIN_PATTERN.pattern.startswith("^" + VEHICLE_THINGS.removesuffix("*"))
    assert VEHICLE_THINGS == "VIN-*"


def test_the_iot_rules_reach_only_their_dead_letter_stores() -> None:
    resources = _resources()
    statements = _statements(resources, "IotRuleRole")

    assert [(s["Action"], s["Resource"]) for s in statements] == [
        (["sqs:SendMessage"], {"Fn::GetAtt": ["OtaDlq", "Arn"]}),
        (["s3:PutObject"], {"Fn::Sub": "${TelemetryDlqBucket.Arn}/dlq/*"}),
    ]
    for rule in RULES:
        error = next(
            r["Properties"]["TopicRulePayload"]["ErrorAction"]
            for r in _of_type(resources, "AWS::IoT::TopicRule").values()
            if f"'{rule.name}' AS rule" in r["Properties"]["TopicRulePayload"]["Sql"]
        )
        if "S3" in error:
            assert error["S3"]["Key"].startswith("dlq/")


def test_firehose_delivers_only_into_the_archive_bucket() -> None:
    resources = _resources()
    statements = _statements(resources, "TimeseriesDeliveryRole")
    trust = resources["TimeseriesDeliveryRole"]["Properties"]["AssumeRolePolicyDocument"]

    assert [s["Resource"] for s in statements] == [
        [
            {"Fn::GetAtt": ["TelemetryArchiveBucket", "Arn"]},
            {"Fn::Sub": "${TelemetryArchiveBucket.Arn}/*"},
        ]
    ]
    (statement,) = trust["Statement"]
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "AWS::AccountId"}}}


def test_a_rule_with_a_handler_of_no_known_profile_is_refused() -> None:
    from v2c.contract.errors import ConfigurationError

    odd = Rule("odd", "v2c/v1/+/+/odd/x", "v2c.handlers.noop:lambda_handler", "telemetry")

    with pytest.raises(ConfigurationError, match="RULE_PROFILES"):
        render((odd,))


def test_a_function_access_names_its_role_and_log_group() -> None:
    access = FunctionAccess("XFunction", "v2c-x", "m.h", 3)

    assert (access.role, access.log_group) == ("XFunctionRole", "XFunctionLogGroup")


def test_the_api_may_read_copy_and_purge_firmware_by_version() -> None:
    # `ota.firmware.storage` completes a presigned upload on the versioned
    # bucket by version id: GetObject/CopyObject/DeleteObject(s) with VersionId
    # and ListObjectVersions; moto checks no IAM, so the template must say it.
    resources = _resources()
    api = next(a for a in ACCESS.values() if a.handler.endswith("ota_api.lambda_handler"))
    statements = resources[api.role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    actions = {action for s in statements for action in s["Action"]}
    assert {"s3:GetObjectVersion", "s3:DeleteObjectVersion", "s3:ListBucketVersions"} <= actions
    telemetry = next(
        a for a in ACCESS.values() if a.handler.endswith("telemetry_ingest.lambda_handler")
    )
    statements = resources[telemetry.role]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    assert not {a for s in statements for a in s["Action"]} & {"s3:DeleteObjectVersion"}


class RecordingIot:
    """An AWS IoT client that records the calls `IotCoreIssuer` makes; the
    vehicle's thing exists already (a registered vehicle rotates)."""

    def __init__(self, pem: str) -> None:
        self.pem = pem
        self.calls: list[str] = []

    def __getattr__(self, method: str) -> Any:
        def call(**kwargs: Any) -> dict[str, Any]:
            self.calls.append(method)
            if method == "create_thing":
                error = {"Error": {"Code": "ResourceAlreadyExistsException", "Message": "exists"}}
                raise ClientError(error, "CreateThing")  # type: ignore[arg-type]
            arn = "arn:aws:iot:eu-west-1:123456789012:cert/abc"
            return {
                "certificateArn": arn,
                "certificateId": "abc",
                "certificatePem": self.pem,
                "certificateDescription": {"certificateArn": arn},
                "principals": [arn],
            }

        return call

    def actions(self) -> set[str]:
        """The IAM actions of the recorded calls (`create_thing` -> `iot:CreateThing`)."""
        camel = ("".join(part.capitalize() for part in m.split("_")) for m in self.calls)
        return {f"iot:{name}" for name in camel}


def a_certificate_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "VIN-1HGBH41JXMN109186")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_the_rotation_function_may_make_exactly_the_iot_calls_rotation_makes() -> None:
    # The rotation (issue for the registered thing; revoke the old certificate)
    # and the expiry pass (revoke) through the issuer the function builds
    iot = RecordingIot(a_certificate_pem())
    issuer = IotCoreIssuer(iot)
    request = IssueRequest("VIN-1HGBH41JXMN109186", "CSR", "sha", "Accord", "eu-west-1", 2024)
    (issued,) = issuer.issue([request])
    assert not isinstance(issued, Exception)
    issuer.revoke(request.vehicle_id, issued)
    rotation_calls = iot.actions()

    statements = _statements(_resources(), ACCESS[ROTATION].role)
    granted = {a for a in _actions(statements) if a.startswith("iot:") and a != "iot:Publish"}

    # every call rotation makes is granted, and nothing else: a function driven
    # by vehicle input deletes no thing, lists no principals, describes no thing
    assert granted == rotation_calls
    assert not granted & {"iot:DeleteThing", "iot:ListThingPrincipals", "iot:DescribeThing"}
    # the API decommissions, which the rotation role could not
    iot.calls.clear()
    issuer.decommission(request.vehicle_id, None)
    assert "iot:DeleteThing" in iot.actions() - granted
    api = _actions(_statements(_resources(), ACCESS["OtaApiFunction"].role))
    assert iot.actions() <= api
