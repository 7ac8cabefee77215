"""A P-256 key held in process memory: for development and tests only.

Production keys live in an HSM (`pkcs11.py`) or KMS (`kms.py`), where the
private half cannot be read. This backend has the same policy and the same
signatures, so everything above the port is exercised without an HSM. The
key never appears in a repr; `private_key_pem` exists to keep a development
key across runs, and says so in its name.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.errors import ConfigurationError
from v2c.handlers.signing.base import FailureHook, Signer, SigningPolicy


class SoftwareSigner(Signer):
    backend = "software"

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        *,
        key_id: str | None = None,
        policy: SigningPolicy | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ConfigurationError("the software signing key must be an EC P-256 key")
        super().__init__(key_id=key_id, policy=policy, on_failure=on_failure)
        self.__private_key = private_key

    @classmethod
    def generate(
        cls,
        *,
        key_id: str | None = None,
        policy: SigningPolicy | None = None,
        on_failure: FailureHook | None = None,
    ) -> SoftwareSigner:
        """A fresh random key (lost when the process ends unless exported)."""
        return cls(
            ec.generate_private_key(ec.SECP256R1()),
            key_id=key_id,
            policy=policy,
            on_failure=on_failure,
        )

    @classmethod
    def from_pem(
        cls,
        pem: bytes,
        password: bytes | None = None,
        *,
        key_id: str | None = None,
        policy: SigningPolicy | None = None,
        on_failure: FailureHook | None = None,
    ) -> SoftwareSigner:
        """Load a PKCS#8 or SEC1 PEM private key (optionally encrypted)."""
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except (ValueError, TypeError) as exc:
            # The library's message never contains key bytes; keep only its type.
            raise ConfigurationError(
                f"cannot load the software signing key ({type(exc).__name__})"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigurationError("the software signing key must be an EC P-256 key")
        return cls(key, key_id=key_id, policy=policy, on_failure=on_failure)

    def private_key_pem(self, password: bytes | None = None) -> bytes:
        """Export the private key as PKCS#8 PEM, encrypted when `password` is
        given: only to keep a development key across runs."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.__private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def _sign(self, message: bytes) -> bytes:
        return self.__private_key.sign(message, ec.ECDSA(hashes.SHA256()))

    def _public_key_der(self) -> bytes:
        return self.__private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
