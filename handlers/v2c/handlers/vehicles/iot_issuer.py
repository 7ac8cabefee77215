"""Vehicle certificates from AWS IoT Core: a thing per vehicle, its certificate from the CSR.

Issuing one vehicle (the CSR's private key never leaves the vehicle):

1. `CreateThing` named after the vehicle id, of thing type `IOT_THING_TYPE`
   (default `v2c-vehicle`), with its model, region and year as searchable
   attributes (`UpdateThing` when the thing exists: a re-registration);
2. `CreateCertificateFromCsr` with `setAsActive`;
3. `AttachPolicy` of `IOT_POLICY_NAME` (default `v2c-vehicle`: the policy
   `v2c.infra.device_policy.aws_iot_vehicle_policy` renders, whose
   `iot:Connect` needs the thing attached and whose topics use the thing
   name) to the certificate;
4. `AttachThingPrincipal`: the certificate to the thing.

A failure after step 2 revokes the new certificate before the error goes
up, so no half-attached active certificate stays behind.

Revoking (a replaced or renewed certificate): `UpdateCertificate` REVOKED,
then detach it from the policy and the thing. Decommissioning: every
principal of the thing revoked and detached, then `DeleteThing`. Both are
idempotent: what is already gone is skipped. Revoked certificates are kept
(AWS IoT keeps them for the record; deleting needs them detached anyway).

IAM (the API function): iot:CreateThing, iot:UpdateThing, iot:DeleteThing,
iot:CreateCertificateFromCsr, iot:UpdateCertificate, iot:DescribeCertificate,
iot:AttachPolicy, iot:DetachPolicy, iot:AttachThingPrincipal,
iot:DetachThingPrincipal, iot:ListThingPrincipals.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from cryptography import x509

from v2c.contract.errors import InvalidField, V2CError
from v2c.handlers.aws_errors import error_code
from v2c.handlers.aws_errors import translate as transient
from v2c.handlers.vehicles.ports import IssueRequest, IssueResult
from v2c.handlers.vehicles.record import Certificate

logger = logging.getLogger(__name__)

DEFAULT_POLICY: Final = "v2c-vehicle"
DEFAULT_THING_TYPE: Final = "v2c-vehicle"
CONCURRENCY: Final = 8  # vehicles issued at once (IoT's control plane allows ~10-100 TPS per API)
_GONE: Final = frozenset({"ResourceNotFoundException"})
# AWS IoT thing attribute values: [a-zA-Z0-9_.,@/:#=\[\]-]*, at most 800 characters.
_NOT_ATTRIBUTE: Final = re.compile(r"[^a-zA-Z0-9_.,@/:#=\[\]-]")


def thing_attribute(value: str) -> str:
    """`value` as an IoT thing attribute value (other characters become `_`)."""
    return _NOT_ATTRIBUTE.sub("_", value)[:800]


def expires_at_ms(pem: str) -> int:
    certificate = x509.load_pem_x509_certificate(pem.encode())
    return int(certificate.not_valid_after_utc.timestamp() * 1000)


class IotCoreIssuer:
    def __init__(
        self,
        client: Any,
        *,
        policy_name: str = DEFAULT_POLICY,
        thing_type: str = DEFAULT_THING_TYPE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._iot = client
        self._policy = policy_name
        self._thing_type = thing_type
        self._clock = clock

    def issue(self, requests: Sequence[IssueRequest]) -> list[IssueResult]:
        """Each vehicle takes four requests in sequence; `CONCURRENCY` vehicles
        go at once (boto3 clients are thread-safe), so a bulk registration
        of a few hundred fits API Gateway's 29 s."""

        def one(request: IssueRequest) -> IssueResult:
            try:
                return self._issue(request)
            except V2CError as exc:
                return exc

        if len(requests) <= 1:
            return [one(r) for r in requests]
        with ThreadPoolExecutor(min(CONCURRENCY, len(requests))) as pool:
            return list(pool.map(one, requests))

    def _call(self, action: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._iot, method)(**kwargs)
        except ClientError as exc:
            if error_code(exc) in ("InvalidRequestException", "CertificateValidationException"):
                raise InvalidField("csr", f"AWS IoT refused it: {exc}") from exc
            raise transient(action, exc) from exc
        except BotoCoreError as exc:
            raise transient(action, exc) from exc

    def _thing(self, request: IssueRequest) -> None:
        payload = {
            "attributes": {
                "model": thing_attribute(request.model),
                "region": thing_attribute(request.region),
                "year": str(request.year),
            },
            "merge": True,
        }
        try:
            self._iot.create_thing(
                thingName=request.vehicle_id,
                thingTypeName=self._thing_type,
                attributePayload=payload,
            )
        except ClientError as exc:
            if error_code(exc) != "ResourceAlreadyExistsException":
                raise transient("creating the vehicle's thing", exc) from exc
            self._call(
                "updating the vehicle's thing",
                "update_thing",
                thingName=request.vehicle_id,
                thingTypeName=self._thing_type,
                attributePayload=payload,
            )
        except BotoCoreError as exc:
            raise transient("creating the vehicle's thing", exc) from exc

    def _issue(self, request: IssueRequest) -> Certificate:
        self._thing(request)
        answer = self._call(
            "issuing the vehicle's certificate",
            "create_certificate_from_csr",
            certificateSigningRequest=request.csr_pem,
            setAsActive=True,
        )
        arn, certificate_id = answer["certificateArn"], answer["certificateId"]
        pem = str(answer["certificatePem"])
        try:
            self._call("attaching the policy", "attach_policy", policyName=self._policy, target=arn)
            self._call(
                "attaching the certificate to the thing",
                "attach_thing_principal",
                thingName=request.vehicle_id,
                principal=arn,
            )
        except V2CError:
            self._revoke_arn(request.vehicle_id, certificate_id, arn)
            raise
        return Certificate(
            certificate_id=certificate_id,
            pem=pem,
            expires_at_ms=expires_at_ms(pem),
            issued_at_ms=int(self._clock() * 1000),
            public_key_sha256=request.public_key_sha256,
        )

    def _quietly(self, action: str, method: str, **kwargs: Any) -> None:
        """An idempotent step: what is gone already is skipped."""
        try:
            getattr(self._iot, method)(**kwargs)
        except ClientError as exc:
            if error_code(exc) in _GONE:
                return
            raise transient(action, exc) from exc
        except BotoCoreError as exc:
            raise transient(action, exc) from exc

    def _revoke_arn(self, vehicle_id: str, certificate_id: str, arn: str) -> None:
        self._quietly(
            "revoking the certificate",
            "update_certificate",
            certificateId=certificate_id,
            newStatus="REVOKED",
        )
        self._quietly("detaching the policy", "detach_policy", policyName=self._policy, target=arn)
        self._quietly(
            "detaching the certificate",
            "detach_thing_principal",
            thingName=vehicle_id,
            principal=arn,
        )

    def _arn(self, certificate_id: str) -> str | None:
        try:
            answer = self._iot.describe_certificate(certificateId=certificate_id)
        except ClientError as exc:
            if error_code(exc) in _GONE:
                return None
            raise transient("reading the certificate", exc) from exc
        except BotoCoreError as exc:
            raise transient("reading the certificate", exc) from exc
        return str(answer["certificateDescription"]["certificateArn"])

    def revoke(self, vehicle_id: str, certificate: Certificate) -> None:
        arn = self._arn(certificate.certificate_id)
        if arn is not None:
            self._revoke_arn(vehicle_id, certificate.certificate_id, arn)

    def _principals(self, vehicle_id: str) -> list[str]:
        try:
            answer = self._iot.list_thing_principals(thingName=vehicle_id)
        except ClientError as exc:
            if error_code(exc) in _GONE:
                return []
            raise transient("listing the thing's certificates", exc) from exc
        except BotoCoreError as exc:
            raise transient("listing the thing's certificates", exc) from exc
        return [str(p) for p in answer.get("principals", [])]

    def decommission(self, vehicle_id: str, certificate: Certificate | None) -> None:
        arns = self._principals(vehicle_id)
        if certificate is not None:
            known = self._arn(certificate.certificate_id)
            if known is not None and known not in arns:
                arns.append(known)
        for arn in arns:
            self._revoke_arn(vehicle_id, arn.rsplit("/", 1)[-1], arn)
        self._quietly("deleting the vehicle's thing", "delete_thing", thingName=vehicle_id)
