"""The policy every backend gets from `Signer.sign`: a timeout per attempt,
retries with exponential backoff, one typed error at the end, and the alert
metric. Driven by a scripted backend; timeouts are milliseconds and the
backoff sleep is recorded, not slept."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.errors import ConfigurationError, SigningUnavailable
from v2c.handlers.signing import (
    Signer,
    SigningFailure,
    SigningMetrics,
    SigningPolicy,
    key_fingerprint,
)

KEY = ec.generate_private_key(ec.SECP256R1())


class ScriptedSigner(Signer):
    """Each attempt takes the next step of `script`: ok, fail, hang, garbage,
    other_key or config."""

    backend = "scripted"

    def __init__(self, script: list[str], release: threading.Event, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.script = list(script)
        self.release = release
        self.calls = 0

    def _step(self) -> str:
        self.calls += 1
        return self.script.pop(0) if self.script else "ok"

    def _sign(self, message: bytes) -> bytes:
        step = self._step()
        if step == "fail":
            raise ConnectionError("HSM unreachable")
        if step == "hang":
            self.release.wait(10)
            raise ConnectionError("released")
        if step == "garbage":
            return b"\x30\x06\x02\x01\x01\x02\x01\x01"
        if step == "other_key":
            return ec.generate_private_key(ec.SECP256R1()).sign(message, ec.ECDSA(hashes.SHA256()))
        if step == "config":
            raise ConfigurationError("PIN refused")
        return KEY.sign(message, ec.ECDSA(hashes.SHA256()))

    def _public_key_der(self) -> bytes:
        return KEY.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Lets hung attempts end when the test is over (they are daemon threads)."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def policy(sleeps: list[float]) -> SigningPolicy:
    """The default limits, except that backoff sleeps are recorded, not slept.
    Healthy attempts answer in about a millisecond, far inside 5 s."""
    return SigningPolicy(timeout_s=5.0, attempts=3, backoff_initial_s=0.2, sleep=sleeps.append)


def short_timeout(policy: SigningPolicy, timeout_s: float) -> SigningPolicy:
    """For the tests where an attempt hangs: each costs `timeout_s` of waiting."""
    return replace(policy, timeout_s=timeout_s)


def scripted(
    script: list[str],
    release: threading.Event,
    policy: SigningPolicy,
    hook: object = None,
) -> ScriptedSigner:
    return ScriptedSigner(script, release, policy=policy, on_failure=hook)


def test_healthy_backend_signs_on_the_first_attempt(
    release: threading.Event, policy: SigningPolicy, sleeps: list[float]
) -> None:
    signer = scripted([], release, policy)
    signature = signer.sign(b"m")
    assert signature.key_id == key_fingerprint(KEY.public_key())
    assert (signer.calls, sleeps) == (1, [])


def test_two_failures_then_success_returns_a_signature_after_backing_off(
    release: threading.Event, policy: SigningPolicy, sleeps: list[float]
) -> None:
    failures: list[SigningFailure] = []
    signer = scripted(["fail", "fail"], release, policy, failures.append)
    signer.sign(b"m")
    assert signer.calls == 3
    assert sleeps == pytest.approx([0.2, 0.4])  # exponential
    assert failures == []


def test_backend_failing_every_attempt_raises_signing_unavailable_and_fires_the_hook(
    release: threading.Event, policy: SigningPolicy, sleeps: list[float]
) -> None:
    failures: list[SigningFailure] = []
    signer = scripted(["fail"] * 3, release, policy, failures.append)
    with pytest.raises(SigningUnavailable) as caught:
        signer.sign(b"m")
    assert caught.value.http_status == 503
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert signer.calls == 3
    assert len(sleeps) == 2
    assert [(f.backend, f.operation, f.reason, f.attempts) for f in failures] == [
        ("scripted", "sign", "backend_error", 3)
    ]


def test_hanging_backend_times_out_on_each_attempt(
    release: threading.Event, policy: SigningPolicy
) -> None:
    failures: list[SigningFailure] = []
    signer = scripted(["hang"] * 3, release, short_timeout(policy, 0.02), failures.append)
    with pytest.raises(SigningUnavailable, match="timeout"):
        signer.sign(b"m")
    assert signer.calls == 3
    assert failures[0].reason == "timeout"
    assert failures[0].error_type == "SigningTimeout"


def test_one_hung_attempt_then_a_healthy_one_succeeds(
    release: threading.Event, policy: SigningPolicy
) -> None:
    # The healthy second attempt must answer within the timeout: leave it room.
    signer = scripted(["hang"], release, short_timeout(policy, 0.2))
    assert signer.sign(b"m").der
    assert signer.calls == 2


@pytest.mark.parametrize("bad", ["garbage", "other_key"])
def test_signature_that_does_not_verify_is_retried_never_returned(
    release: threading.Event, policy: SigningPolicy, bad: str
) -> None:
    failures: list[SigningFailure] = []
    signer = scripted([bad] * 3, release, policy, failures.append)
    with pytest.raises(SigningUnavailable, match="bad_signature"):
        signer.sign(b"m")
    assert failures[0].reason == "bad_signature"


def test_configuration_error_is_not_retried_and_propagates_unchanged(
    release: threading.Event, policy: SigningPolicy, sleeps: list[float]
) -> None:
    failures: list[SigningFailure] = []
    signer = scripted(["config"], release, policy, failures.append)
    with pytest.raises(ConfigurationError, match="PIN refused"):
        signer.sign(b"m")
    assert (signer.calls, sleeps) == (1, [])
    assert failures[0].reason == "configuration_error"


def test_unreachable_public_key_is_reported_as_its_own_operation(
    release: threading.Event, policy: SigningPolicy
) -> None:
    class NoPublicKey(ScriptedSigner):
        def _public_key_der(self) -> bytes:
            raise TimeoutError("no route")

    failures: list[SigningFailure] = []
    signer = NoPublicKey([], release, policy=policy, on_failure=failures.append)
    with pytest.raises(SigningUnavailable, match="public_key"):
        signer.sign(b"m")
    assert failures[0].operation == "public_key"
    assert failures[0].key_id is None


def test_prometheus_metric_counts_final_failures_only(
    release: threading.Event, policy: SigningPolicy
) -> None:
    metrics = SigningMetrics()
    scripted(["fail", "fail"], release, policy, metrics).sign(b"m")  # recovered: no alert
    assert metrics.failure_count("scripted") == 0
    with pytest.raises(SigningUnavailable):
        scripted(["fail"] * 3, release, policy, metrics).sign(b"m")
    assert metrics.failure_count("scripted", reason="backend_error") == 1
    exposed = metrics.registry.get_sample_value(
        "v2c_signing_failures_total",
        {"backend": "scripted", "operation": "sign", "reason": "backend_error"},
    )
    assert exposed == 1


def test_a_broken_hook_does_not_mask_the_signing_error(
    release: threading.Event, policy: SigningPolicy
) -> None:
    def broken(failure: SigningFailure) -> None:
        raise RuntimeError("metrics backend down")

    with pytest.raises(SigningUnavailable):
        scripted(["fail"] * 3, release, policy, broken).sign(b"m")


def test_logs_name_the_key_id_never_the_key(
    release: threading.Event, policy: SigningPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    signer = scripted(["fail"] * 3, release, policy)
    with caplog.at_level(logging.DEBUG), pytest.raises(SigningUnavailable):
        signer.sign(b"m")
    text = caplog.text
    assert signer.key_id in text
    assert "PRIVATE KEY" not in text
    assert pem.splitlines()[1][:20] not in text


def test_policy_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="attempts"):
        SigningPolicy(attempts=0)
    with pytest.raises(ValueError, match="timeout"):
        SigningPolicy(timeout_s=0)


def test_default_policy_is_five_seconds_three_attempts() -> None:
    policy = SigningPolicy()
    assert (policy.timeout_s, policy.attempts) == (5.0, 3)
