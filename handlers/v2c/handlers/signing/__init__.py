"""OTA manifest signing: the `Signer` port, its backends and pure verification.

Backends: `software.SoftwareSigner` (development), `pkcs11.Pkcs11Signer`
(HSMs, SoftHSM2 locally; needs the `hsm` extra) and `kms.KmsSigner` (AWS
KMS). They are imported from their modules, so this package does not need
python-pkcs11 unless the PKCS#11 backend is used.
"""

from v2c.contract.keyset import TrustedKey, TrustedKeySet, key_fingerprint
from v2c.contract.manifest import manifest_bytes, verify_manifest, verify_notification
from v2c.handlers.signing.base import (
    ALGORITHM,
    FailureHook,
    Signature,
    Signer,
    SigningFailure,
    SigningPolicy,
)
from v2c.handlers.signing.manifest import sign_manifest
from v2c.handlers.signing.metrics import SigningMetrics

__all__ = [
    "ALGORITHM",
    "FailureHook",
    "Signature",
    "Signer",
    "SigningFailure",
    "SigningMetrics",
    "SigningPolicy",
    "TrustedKey",
    "TrustedKeySet",
    "key_fingerprint",
    "manifest_bytes",
    "sign_manifest",
    "verify_manifest",
    "verify_notification",
]
