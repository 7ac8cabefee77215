"""A P-256 key in AWS KMS (`ECC_NIST_P256`, `SIGN_VERIFY`, `ECDSA_SHA_256`).

The key is named by alias (`alias/v2c-ota-signing`, from
`v2c.infra.aws.resources.ResourceNames.signing_key_alias`) or by id/ARN; the
first call (`GetPublicKey`) resolves it to the key itself and the signer then
signs with that key only. A rotation repoints the alias at a new key; a
running signer keeps signing with the key whose public key it announced, and
a new signer picks up the new key. Without that pin, a signature made by the
new key would travel with the old key's id.

MessageType: `RAW` sends the manifest (a few hundred bytes; the limit is
4,096) and KMS hashes it; `DIGEST` sends our SHA-256 instead. Both give the
same signature on AWS. The default is RAW because the moto server ignores
MessageType and always hashes what it receives, so a DIGEST signature from
moto does not verify (sign-then-verify in `Signer.sign` would refuse it);
messages above the RAW limit are always sent as DIGEST.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Final, Literal

from botocore.exceptions import ClientError

from v2c.contract.errors import ConfigurationError
from v2c.handlers.signing.base import FailureHook, Signer, SigningPolicy

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

KMS_KEY_SPEC = "ECC_NIST_P256"
KMS_KEY_USAGE = "SIGN_VERIFY"
KMS_SIGNING_ALGORITHM: Final = "ECDSA_SHA_256"
RAW_MESSAGE_LIMIT = 4096

# Errors no retry can fix: the key is missing, disabled, of the wrong kind,
# or this identity may not use it. An operator must act.
_CONFIGURATION_CODES = frozenset(
    {
        "NotFoundException",
        "DisabledException",
        "InvalidKeyUsageException",
        "KMSInvalidStateException",
        "AccessDeniedException",
        "ValidationException",
    }
)


def _translate(exc: ClientError, kms_key_id: str) -> Exception:
    code = exc.response.get("Error", {}).get("Code", "")
    if code in _CONFIGURATION_CODES:
        return ConfigurationError(f"KMS key {kms_key_id} cannot sign: {code}")
    return exc


class KmsSigner(Signer):
    backend = "kms"

    def __init__(
        self,
        client: KMSClient,
        kms_key_id: str,
        *,
        message_type: Literal["RAW", "DIGEST"] = "RAW",
        key_id: str | None = None,
        policy: SigningPolicy | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        """`client`: a KMS client (share one per process; give it few retries
        and a read timeout under the policy's 5 s, the policy retries).
        `kms_key_id`: an alias (`alias/...`), a key id or a key ARN."""
        super().__init__(key_id=key_id, policy=policy, on_failure=on_failure)
        self._client = client
        self.kms_key_id = kms_key_id
        self.message_type = message_type
        self._resolved_key_id: str | None = None

    @property
    def resolved_key_id(self) -> str:
        """The key this signer is pinned to, resolved from the alias on first
        use: its ARN on AWS (the moto server answers the bare key id)."""
        self.public_key()
        assert self._resolved_key_id is not None
        return self._resolved_key_id

    def _public_key_der(self) -> bytes:
        try:
            reply = self._client.get_public_key(KeyId=self.kms_key_id)
        except ClientError as exc:
            raise _translate(exc, self.kms_key_id) from exc
        # AWS answers both names of the spec; the moto server only the older one.
        answered: dict[str, Any] = dict(reply)  # the stubs call KeySpec always present
        spec = answered.get("KeySpec") or answered.get("CustomerMasterKeySpec")
        if spec != KMS_KEY_SPEC or reply.get("KeyUsage") != KMS_KEY_USAGE:
            raise ConfigurationError(
                f"KMS key {self.kms_key_id} is {spec}/{reply.get('KeyUsage')}, "
                f"not {KMS_KEY_SPEC}/{KMS_KEY_USAGE}"
            )
        if KMS_SIGNING_ALGORITHM not in reply.get("SigningAlgorithms", [KMS_SIGNING_ALGORITHM]):
            raise ConfigurationError(f"KMS key {self.kms_key_id} does not offer ECDSA_SHA_256")
        self._resolved_key_id = reply["KeyId"]
        return reply["PublicKey"]

    def _sign(self, message: bytes) -> bytes:
        key = self._resolved_key_id or self.kms_key_id
        message_type: Literal["RAW", "DIGEST"] = "DIGEST"
        payload = hashlib.sha256(message).digest()
        if self.message_type == "RAW" and len(message) <= RAW_MESSAGE_LIMIT:
            payload, message_type = message, "RAW"
        try:
            reply = self._client.sign(
                KeyId=key,
                Message=payload,
                MessageType=message_type,
                SigningAlgorithm=KMS_SIGNING_ALGORITHM,
            )
        except ClientError as exc:
            raise _translate(exc, key) from exc
        return reply["Signature"]
