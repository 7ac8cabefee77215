"""A P-256 key inside a PKCS#11 token: how CloudHSM (and any HSM) is reached.

The private key is generated on the token, marked sensitive and not
extractable, and never leaves it: we compute SHA-256 ourselves and ask the
token for `CKM_ECDSA` over the digest (supported by every HSM, unlike the
combined `CKM_ECDSA_SHA256`), then turn its raw r||s (64 bytes) into DER.
Tested against SoftHSM2 (`softhsm.py` sets one up in a directory).

PKCS#11 login state belongs to the process, not to a session: a second
`C_Login` fails with "already logged in", and closing any logged-in session
(python-pkcs11 calls `C_Logout`) logs out every other one. So the login is
held by one session per token for the whole process (`_LOGINS`), and signers
work in sessions of their own that never log in or out and that inherit the
login; two signers on one token (a rotation) then coexist. Each signer's
session is serialised by a lock (a session is not thread-safe). After a token
error both the signer's session and the token's login are dropped and the
next attempt reopens them, which is how a restarted HSM is picked up again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pkcs11
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import (
    MultipleObjectsReturned,
    NoSuchKey,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
    UserPinNotInitialized,
)
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from v2c.contract.errors import ConfigurationError
from v2c.handlers.signing.base import FailureHook, Signer, SigningPolicy

P256_RAW_SIGNATURE_BYTES = 64

# A PIN error retried three times can lock a real HSM's user: never retry it.
_PIN_ERRORS = (PinIncorrect, PinInvalid, PinLenRange, PinLocked, PinExpired, UserPinNotInitialized)


@dataclass(frozen=True)
class Pkcs11Config:
    """Where the key is: the vendor library, the token and the key's label."""

    library_path: str
    token_label: str
    key_label: str
    user_pin: str = field(repr=False)


_LOGINS: dict[tuple[str, str], tuple[Any, bytes]] = {}  # (library, token) → (session, PIN hash)
_LOGINS_LOCK = threading.Lock()


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode()).digest()


def _login_key(config: Pkcs11Config) -> tuple[str, str]:
    return (config.library_path, config.token_label)


def _ensure_login(token: Any, config: Pkcs11Config) -> None:
    """Log this process in to the token once; refuse a PIN that differs from
    the one the standing login used (it would otherwise pass unchecked)."""
    digest = _pin_digest(config.user_pin)
    with _LOGINS_LOCK:
        held = _LOGINS.get(_login_key(config))
        if held is not None:
            if not hmac.compare_digest(held[1], digest):
                raise ConfigurationError(
                    f"the PKCS#11 token {config.token_label!r} refused the user PIN "
                    "(not the PIN this process logged in with)"
                )
            return
        try:
            _LOGINS[_login_key(config)] = (token.open(user_pin=config.user_pin), digest)
        except UserAlreadyLoggedIn:
            pass  # logged in outside this module: that login serves our sessions too
        except _PIN_ERRORS as exc:
            raise ConfigurationError(
                f"the PKCS#11 token {config.token_label!r} refused the user PIN "
                f"({type(exc).__name__})"
            ) from None


def forget_login(config: Pkcs11Config | None = None) -> None:
    """Drop the standing login of one token (all when `config` is None), so
    the next session logs in again: after a token error, or after the
    library was re-initialised (which invalidates every session)."""
    with _LOGINS_LOCK:
        keys = list(_LOGINS) if config is None else [_login_key(config)]
        held = [_LOGINS.pop(key) for key in keys if key in _LOGINS]
    for session, _ in held:
        with contextlib.suppress(PKCS11Error):
            session.close()


def _open_session(config: Pkcs11Config, *, rw: bool = False) -> Any:
    """A session that inherits the process's login and never logs out."""
    if not Path(config.library_path).is_file():
        raise ConfigurationError(f"PKCS#11 library {config.library_path} does not exist")
    lib = pkcs11.lib(config.library_path)
    token = lib.get_token(token_label=config.token_label)
    _ensure_login(token, config)
    return token.open(rw=rw)


def _find_key(session: Any, object_class: ObjectClass, label: str) -> Any:
    try:
        return session.get_key(object_class, KeyType.EC, label=label)
    except NoSuchKey:
        raise ConfigurationError(f"no EC key labelled {label!r} on the token") from None
    except MultipleObjectsReturned:
        raise ConfigurationError(f"several EC keys labelled {label!r} on the token") from None


def generate_keypair(config: Pkcs11Config) -> bool:
    """Create the P-256 key pair `config.key_label` on the token unless it
    exists; True when it was created. The private half is sensitive and
    not extractable: it can sign, nothing else, and never be read."""
    with _open_session(config, rw=True) as session:
        try:
            session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label=config.key_label)
        except NoSuchKey:
            pass
        else:
            return False
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        params.generate_keypair(
            store=True,
            label=config.key_label,
            id=config.key_label.encode(),
            public_template={Attribute.VERIFY: True},
            private_template={
                Attribute.SIGN: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            },
        )
        return True


class Pkcs11Signer(Signer):
    backend = "pkcs11"

    def __init__(
        self,
        config: Pkcs11Config,
        *,
        key_id: str | None = None,
        policy: SigningPolicy | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        super().__init__(key_id=key_id, policy=policy, on_failure=on_failure)
        self.config = config
        self._lock = threading.Lock()
        self._session: Any = None
        self._private_key: Any = None

    def _ensure_session(self) -> Any:
        if self._session is None:
            session = _open_session(self.config)
            try:
                self._private_key = _find_key(
                    session, ObjectClass.PRIVATE_KEY, self.config.key_label
                )
            except BaseException:
                session.close()
                raise
            self._session = session
        return self._session

    def _drop_session(self) -> None:
        session, self._session, self._private_key = self._session, None, None
        if session is not None:
            # If the token is gone already, the handle died with it.
            with contextlib.suppress(PKCS11Error):
                session.close()

    def _reset_after_error(self) -> None:
        self._drop_session()
        forget_login(self.config)

    def close(self) -> None:
        """Log out and close the session (the next `sign` reopens it)."""
        with self._lock:
            self._drop_session()

    def _sign(self, message: bytes) -> bytes:
        digest = hashlib.sha256(message).digest()
        with self._lock:
            self._ensure_session()
            try:
                raw = self._private_key.sign(digest, mechanism=Mechanism.ECDSA)
            except PKCS11Error:
                self._reset_after_error()
                raise
        if len(raw) != P256_RAW_SIGNATURE_BYTES:
            raise ValueError(f"the token returned a {len(raw)}-byte signature, not 64")
        half = P256_RAW_SIGNATURE_BYTES // 2
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    def _public_key_der(self) -> bytes:
        with self._lock:
            session = self._ensure_session()
            try:
                public = _find_key(session, ObjectClass.PUBLIC_KEY, self.config.key_label)
                return encode_ec_public_key(public)
            except PKCS11Error:
                self._reset_after_error()
                raise
