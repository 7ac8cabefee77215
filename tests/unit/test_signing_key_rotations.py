"""Key rotation: vehicles trust a key set, each key for a window, so the old
and the new key both verify during the overlap and only then."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from signing_helpers import T0, make_manifest

from v2c.contract.errors import (
    SignatureInvalid,
    SigningKeyNotValid,
    UnknownSigningKey,
    ValidationFailed,
)
from v2c.handlers.signing import (
    TrustedKey,
    TrustedKeySet,
    sign_manifest,
    verify_notification,
)
from v2c.handlers.signing.software import SoftwareSigner

OVERLAP_START = T0 + timedelta(days=30)
OVERLAP_END = T0 + timedelta(days=37)


@pytest.fixture(scope="module")
def old() -> SoftwareSigner:
    return SoftwareSigner.generate()


@pytest.fixture(scope="module")
def new() -> SoftwareSigner:
    return SoftwareSigner.generate()


@pytest.fixture(scope="module")
def rotating(old: SoftwareSigner, new: SoftwareSigner) -> TrustedKeySet:
    """Old key from T0, new key added at the overlap's start, old retired at its end."""
    before = TrustedKeySet([TrustedKey.from_pem(old.public_key_pem(), T0)])
    return before.with_key(TrustedKey.from_pem(new.public_key_pem(), OVERLAP_START)).retire(
        old.key_id, OVERLAP_END
    )


def test_inside_the_overlap_window_both_keys_verify(
    old: SoftwareSigner, new: SoftwareSigner, rotating: TrustedKeySet
) -> None:
    now = OVERLAP_START + timedelta(days=1)
    for signer in (old, new):
        notification = sign_manifest(signer, make_manifest())
        assert verify_notification(notification, trusted=rotating, now=now).key_id == signer.key_id
    assert {k.key_id for k in rotating.valid_at(now)} == {old.key_id, new.key_id}


def test_after_the_overlap_the_old_key_is_refused_and_the_new_one_verifies(
    old: SoftwareSigner, new: SoftwareSigner, rotating: TrustedKeySet
) -> None:
    after = OVERLAP_END  # the window is half-open: its end is already outside
    with pytest.raises(SigningKeyNotValid, match="not at"):
        verify_notification(sign_manifest(old, make_manifest()), trusted=rotating, now=after)
    verify_notification(sign_manifest(new, make_manifest()), trusted=rotating, now=after)


def test_before_the_overlap_the_new_key_is_not_yet_trusted(
    new: SoftwareSigner, rotating: TrustedKeySet
) -> None:
    with pytest.raises(SigningKeyNotValid):
        verify_notification(
            sign_manifest(new, make_manifest()),
            trusted=rotating,
            now=OVERLAP_START - timedelta(seconds=1),
        )


def test_unknown_key_id_is_refused(rotating: TrustedKeySet) -> None:
    stranger = SoftwareSigner.generate()
    with pytest.raises(UnknownSigningKey):
        verify_notification(
            sign_manifest(stranger, make_manifest()), trusted=rotating, now=OVERLAP_START
        )


def test_every_refusal_is_a_signature_invalid() -> None:
    assert issubclass(UnknownSigningKey, SignatureInvalid)
    assert issubclass(SigningKeyNotValid, SignatureInvalid)


def test_dropping_a_retired_key_removes_it(old: SoftwareSigner, rotating: TrustedKeySet) -> None:
    pruned = rotating.without(old.key_id)
    assert old.key_id not in pruned
    assert len(pruned) == 1


def test_key_set_survives_a_json_round_trip(
    old: SoftwareSigner, new: SoftwareSigner, rotating: TrustedKeySet
) -> None:
    again = TrustedKeySet.from_json(rotating.to_json())
    now = OVERLAP_START + timedelta(hours=1)
    assert {k.key_id for k in again.valid_at(now)} == {old.key_id, new.key_id}
    assert again.key_for(old.key_id, now).valid_until == OVERLAP_END
    assert again.key_for(new.key_id, now).valid_until is None


def test_the_same_key_id_twice_is_refused(old: SoftwareSigner) -> None:
    key = TrustedKey.from_pem(old.public_key_pem(), T0)
    with pytest.raises(ValidationFailed, match="twice"):
        TrustedKeySet([key, key])


def test_naive_times_are_refused(old: SoftwareSigner) -> None:
    with pytest.raises(ValidationFailed, match="time zone"):
        TrustedKey.from_pem(old.public_key_pem(), datetime(2026, 1, 1))


def test_a_window_that_ends_before_it_starts_is_refused(old: SoftwareSigner) -> None:
    with pytest.raises(ValidationFailed, match="not after"):
        TrustedKey.from_pem(old.public_key_pem(), T0, T0 - timedelta(days=1))


def test_a_malformed_key_set_document_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailed):
        TrustedKeySet.from_json('{"keys": [{"key_id": "k"}]}')
