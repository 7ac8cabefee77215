"""The signing port: what every backend (software key, PKCS#11 HSM, AWS KMS)
looks like to the campaign service.

Shaped like python-tuf's fetcher: a backend implements two private methods,
`_sign` and `_public_key_der`, and knows nothing of policy; the public
`sign` and `public_key` own it, identically for every backend:

* each attempt runs with a timeout (5 s), because an HSM that hangs must
  fail a campaign creation, not freeze it;
* 3 attempts with exponential backoff (tenacity), because HSM and KMS errors
  are mostly transient (network, throttling, a busy partition);
* every signature is verified with the public key before it is returned
  (sign-then-verify): a faulty HSM, a DIGEST/RAW mix-up or a key that is not
  the published one fails here, in the cloud, not on 100,000 vehicles;
* after the last attempt, foreign errors become one typed
  `SigningUnavailable` (HTTP 503), and the failure hook fires (the alert
  metric `v2c_signing_failures_total`, see `metrics.py`).

A backend raises a non-retryable `V2CError` (`ConfigurationError`) for what
no retry can fix: a wrong PIN must not be tried three times against an HSM
that locks after a few. Those errors propagate unchanged, after the hook.

Key material never appears in a repr, a log line or an error message: only
key ids (fingerprints of the public key) and error types do.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from v2c.contract.errors import ConfigurationError, SigningUnavailable, V2CError
from v2c.contract.keyset import key_fingerprint
from v2c.contract.manifest import MAX_DER_SIGNATURE_BYTES

log = logging.getLogger(__name__)

ALGORITHM = "ECDSA_P256_SHA256"
"""The one signature algorithm of v2c: ECDSA on NIST P-256 over SHA-256, DER."""


T = TypeVar("T")


@dataclass(frozen=True)
class Signature:
    """A signature and what a verifier needs to pick the key: the key id
    travels with it (in `OTAUpdateAvailable.key_id`)."""

    key_id: str
    algorithm: str
    der: bytes


@dataclass(frozen=True)
class SigningPolicy:
    """Every limit of the signing policy. Tests pass tiny timeouts and a
    recording `sleep`, so the policy is exercised without real waiting."""

    timeout_s: float | None = 5.0
    attempts: int = 3
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 2.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive (or None for no timeout)")
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("need 0 <= backoff_initial_s <= backoff_max_s")


@dataclass(frozen=True)
class SigningFailure:
    """What the failure hook receives when an operation failed for good."""

    backend: str
    operation: str  # "sign" | "public_key" | "probe"
    reason: str  # "timeout" | "backend_error" | "bad_signature" | a V2CError reason
    attempts: int
    error_type: str
    key_id: str | None


FailureHook = Callable[[SigningFailure], None]
# Told the backend's name after an operation succeeded (`v2c_signing_available`).
SuccessHook = Callable[[str], None]


class SigningTimeout(Exception):
    """One attempt exceeded `SigningPolicy.timeout_s` (internal: retried, then
    reported as `SigningUnavailable`)."""


class BadBackendSignature(Exception):
    """The backend returned bytes that are not a valid signature by its own
    public key (internal: retried, then reported as `SigningUnavailable`)."""


def load_p256_public_key(der: bytes) -> ec.EllipticCurvePublicKey:
    """Parse a DER SubjectPublicKeyInfo, refusing anything but a P-256 key."""
    try:
        key = serialization.load_der_public_key(der)
    except ValueError as exc:
        raise ConfigurationError("the signing backend returned an unreadable public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError("the signing key is not an EC P-256 key")
    return key


def _call_with_timeout(fn: Callable[[], T], timeout_s: float | None) -> T:
    """Run `fn` in a daemon thread and stop waiting for it after `timeout_s`.

    A blocked C call (an HSM library, a socket) cannot be interrupted from
    Python; the thread is abandoned and ends whenever the call returns. It is
    a daemon, so a hung backend never keeps the process from exiting, and one
    thread per attempt, so a hung call cannot starve the next attempt the way
    a shared pool could.
    """
    if timeout_s is None:
        return fn()
    outcome: list[tuple[bool, object]] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="v2c-signing-attempt", daemon=True).start()
    if not done.wait(timeout_s):
        raise SigningTimeout(f"no answer within {timeout_s:g} s")
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]  # fn's result, stored untyped


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, V2CError):
        return exc.retryable
    return isinstance(exc, Exception)


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, SigningTimeout):
        return "timeout"
    if isinstance(exc, BadBackendSignature):
        return "bad_signature"
    if isinstance(exc, V2CError):
        return exc.reason
    return "backend_error"


class Signer(ABC):
    """An ECDSA P-256 / SHA-256 signing key, wherever its private half lives.

    Subclasses set `backend` and implement `_sign` (message → DER signature)
    and `_public_key_der` (DER SubjectPublicKeyInfo). Both may block; both
    run under the policy. Safe to share between threads.
    """

    algorithm: ClassVar[str] = ALGORITHM
    backend: ClassVar[str] = "abstract"

    def __init__(
        self,
        *,
        key_id: str | None = None,
        policy: SigningPolicy | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        self._explicit_key_id = key_id
        self.policy = policy or SigningPolicy()
        self._on_failure = on_failure
        self.on_success: SuccessHook | None = None
        self._public_key: ec.EllipticCurvePublicKey | None = None
        self._public_key_lock = threading.Lock()

    @abstractmethod
    def _sign(self, message: bytes) -> bytes:
        """The DER ECDSA signature of SHA-256(`message`). Raise anything."""

    @abstractmethod
    def _public_key_der(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo. Raise anything."""

    def __repr__(self) -> str:
        known = self._explicit_key_id or (
            key_fingerprint(self._public_key) if self._public_key is not None else "?"
        )
        return f"{type(self).__name__}(key_id={known!r})"

    @property
    def key_id(self) -> str:
        """The id that travels with every signature: the one given to the
        constructor, else the public key's fingerprint (loaded once)."""
        if self._explicit_key_id is not None:
            return self._explicit_key_id
        return key_fingerprint(self.public_key())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public key, fetched once under the policy, then cached."""
        with self._public_key_lock:
            if self._public_key is None:
                der = self._run("public_key", self._public_key_der)
                self._public_key = load_p256_public_key(der)
            return self._public_key

    def probe(self) -> None:
        """Reach the backend now, past the cached public key: fetch the key
        again under the policy (timeout, retries, the hooks), the cheapest
        call every backend answers only when it is up (KMS GetPublicKey, a
        PKCS#11 session's key lookup). Without it the availability gauge,
        once 0 after a transient failure, would stay 0 until the next
        signature, since nothing else reaches a signer whose key is cached.
        Raises as `sign` does; the key the cache holds is left alone."""
        key = load_p256_public_key(self._run("probe", self._public_key_der))
        with self._public_key_lock:
            if self._public_key is None:
                self._public_key = key

    def public_key_pem(self) -> bytes:
        """The public key as PEM SubjectPublicKeyInfo: all a verifier needs."""
        return self.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: bytes) -> Signature:
        """Sign `message` (ECDSA P-256 over its SHA-256) under the policy.

        Raises `SigningUnavailable` when every attempt failed or timed out, or
        the backend's non-retryable `V2CError` (e.g. `ConfigurationError`).
        """
        public_key = self.public_key()
        key_id = self.key_id

        def attempt() -> bytes:
            der = _call_with_timeout(lambda: self._sign(message), self.policy.timeout_s)
            try:
                decode_dss_signature(der)
                if len(der) > MAX_DER_SIGNATURE_BYTES:
                    raise ValueError("longer than a P-256 signature")
                public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
            except (ValueError, InvalidSignature) as exc:
                raise BadBackendSignature(
                    "the backend's signature does not verify with its public key"
                ) from exc
            return der

        der = self._run("sign", attempt, timed=False)
        return Signature(key_id=key_id, algorithm=self.algorithm, der=der)

    def _run(self, operation: str, fn: Callable[[], T], *, timed: bool = True) -> T:
        """Apply timeout, retries and error translation to one operation."""
        policy = self.policy
        call = (lambda: _call_with_timeout(fn, policy.timeout_s)) if timed else fn
        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_exponential(
                multiplier=policy.backoff_initial_s,
                min=policy.backoff_initial_s,
                max=policy.backoff_max_s,
            ),
            retry=retry_if_exception(_retryable),
            sleep=policy.sleep,
            before_sleep=lambda state: self._log_retry(operation, state),
            reraise=True,
        )
        try:
            result = retrying(call)
        except Exception as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            self._report(operation, exc, attempts)
            if isinstance(exc, V2CError) and not exc.retryable:
                raise
            raise SigningUnavailable(
                f"{self.backend} signing backend unavailable: {operation} failed "
                f"{attempts} time(s), last: {_failure_reason(exc)}"
            ) from exc
        if self.on_success is not None:
            try:
                self.on_success(self.backend)
            except Exception:  # a broken metrics hook must not fail a signature
                log.exception("signing success hook raised")
        return result

    def _log_retry(self, operation: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "signing %s via %s failed (attempt %d, %s: %s); retrying",
            operation,
            self.backend,
            state.attempt_number,
            type(exc).__name__,
            _failure_reason(exc) if exc is not None else "?",
        )

    def _report(self, operation: str, exc: Exception, attempts: int) -> None:
        key_id = self._explicit_key_id or (
            key_fingerprint(self._public_key) if self._public_key is not None else None
        )
        failure = SigningFailure(
            backend=self.backend,
            operation=operation,
            reason=_failure_reason(exc),
            attempts=attempts,
            error_type=type(exc).__name__,
            key_id=key_id,
        )
        log.error(
            "signing %s via %s failed for good after %d attempt(s): %s (%s), key %s",
            operation,
            self.backend,
            attempts,
            failure.reason,
            failure.error_type,
            key_id,
        )
        if self._on_failure is not None:
            try:
                self._on_failure(failure)
            except Exception:  # a broken metrics hook must not mask the signing error
                log.exception("signing failure hook raised")
