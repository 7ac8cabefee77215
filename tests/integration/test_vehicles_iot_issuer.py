"""Vehicle certificates from AWS IoT Core (moto): thing, certificate, attachments, revocation."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.certificate_renewal import build_csr
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.vehicles import rules
from v2c.handlers.vehicles.config import build_vehicle_service
from v2c.handlers.vehicles.csr import check_csr
from v2c.handlers.vehicles.iot_issuer import DEFAULT_POLICY, DEFAULT_THING_TYPE, IotCoreIssuer
from v2c.handlers.vehicles.ports import IssueRequest
from v2c.handlers.vehicles.record import Certificate
from v2c.infra.device_policy import aws_iot_vehicle_policy

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

VIN = "VIN-1HGBH41JXMN109186"


def ensure_policy_and_type(iot: Any) -> None:
    """What the template provisions (created here unless the bootstrap did)."""
    document = aws_iot_vehicle_policy(region="us-east-1", account="123456789012")
    try:
        iot.create_policy(policyName=DEFAULT_POLICY, policyDocument=json.dumps(document))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise
    try:
        iot.create_thing_type(thingTypeName=DEFAULT_THING_TYPE)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise


@pytest.fixture
def iot(aws_stack: AwsStack) -> Any:
    client = aws_stack.aws.client("iot")
    ensure_policy_and_type(client)
    return client


def request(model: str = "Accord") -> IssueRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    facts = check_csr(build_csr(key, VIN), VIN)
    return IssueRequest(VIN, facts.pem, facts.public_key_sha256, model, "eu-west-1", 2024)


def arn_of(iot: Any, certificate: Certificate) -> str:
    description = iot.describe_certificate(certificateId=certificate.certificate_id)
    return str(description["certificateDescription"]["certificateArn"])


def status_of(iot: Any, certificate: Certificate) -> str:
    description = iot.describe_certificate(certificateId=certificate.certificate_id)
    return str(description["certificateDescription"]["status"])


def policies_of(iot: Any, arn: str) -> list[str]:
    return [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]]


def test_issue_creates_the_thing_and_an_active_certificate_with_policy_and_thing_attached(
    iot: Any,
) -> None:
    issuer = IotCoreIssuer(iot)
    (first,) = issuer.issue([request()])
    assert isinstance(first, Certificate)
    assert first.pem.startswith("-----BEGIN CERTIFICATE-----")
    assert first.expires_at_ms > first.issued_at_ms
    thing = iot.describe_thing(thingName=VIN)
    assert thing["thingTypeName"] == DEFAULT_THING_TYPE
    assert thing["attributes"] == {"model": "Accord", "region": "eu-west-1", "year": "2024"}
    arn = arn_of(iot, first)
    assert status_of(iot, first) == "ACTIVE"
    assert iot.list_thing_principals(thingName=VIN)["principals"] == [arn]
    assert policies_of(iot, arn) == [DEFAULT_POLICY]

    # A second certificate for the same thing (a replaced key): the thing is updated
    (second,) = issuer.issue([request(model="Civic")])
    assert isinstance(second, Certificate)
    assert iot.describe_thing(thingName=VIN)["attributes"]["model"] == "Civic"
    # revoking the first leaves the second attached and working
    issuer.revoke(VIN, first)
    assert status_of(iot, first) == "REVOKED"
    assert policies_of(iot, arn) == []
    assert iot.list_thing_principals(thingName=VIN)["principals"] == [arn_of(iot, second)]
    assert status_of(iot, second) == "ACTIVE"

    # Decommissioning revokes and detaches every certificate and deletes the thing
    issuer.decommission(VIN, second)
    assert status_of(iot, second) == "REVOKED"
    assert policies_of(iot, arn_of(iot, second)) == []
    with pytest.raises(ClientError) as gone:
        iot.describe_thing(thingName=VIN)
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
    issuer.decommission(VIN, second)  # idempotent: nothing left to do


def test_an_issue_that_cannot_attach_revokes_what_it_created(iot: Any) -> None:
    issuer = IotCoreIssuer(iot, policy_name="no-such-policy")
    (failed,) = issuer.issue([request()])
    assert not isinstance(failed, Certificate)
    assert failed.http_status >= 400
    certificates = iot.list_certificates()["certificates"]
    assert [c["status"] for c in certificates] == ["REVOKED"]


def test_the_deployed_wiring_registers_and_decommissions_through_iot_core(
    moto_ota: OtaServices, iot: Any
) -> None:
    """`V2C_CERT_ISSUER` unset: the Lambda form issues through AWS IoT Core."""
    service = build_vehicle_service(moto_ota)
    key = ec.generate_private_key(ec.SECP256R1())
    registration = rules.registration(
        VIN, "Accord", "eu-west-1", 2024, csr=check_csr(build_csr(key, VIN), VIN)
    )
    result = service.register(registration, "ops")
    assert result.outcome is rules.RegistrationOutcome.CREATED
    certificate = result.certificate
    assert certificate is not None
    assert status_of(iot, certificate) == "ACTIVE"
    assert iot.list_thing_principals(thingName=VIN)["principals"] == [arn_of(iot, certificate)]

    done = service.decommission(VIN, "ops", "sold")
    assert done.record.certificate is not None
    assert done.record.certificate.revoked_at_ms > 0
    assert status_of(iot, certificate) == "REVOKED"
    with pytest.raises(ClientError):
        iot.describe_thing(thingName=VIN)
