"""Semantic versions: the format campaigns accept and the order filters use."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from v2c.contract.errors import ValidationFailed
from v2c.contract.semver import SemVer, is_semver


def test_semver_org_precedence_example_is_strictly_increasing() -> None:
    # semver.org §11.4, in order.
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
        "2.10.0",
    ]
    versions = [SemVer.parse(v) for v in chain]
    assert all(a < b for a, b in itertools.pairwise(versions))


def test_build_metadata_does_not_change_precedence_or_equality() -> None:
    assert SemVer.parse("1.2.3+a") == SemVer.parse("1.2.3+b")
    assert hash(SemVer.parse("1.2.3+a")) == hash(SemVer.parse("1.2.3"))


@pytest.mark.parametrize(
    "text", ["1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.2.3-", "1.2.3-01", " 1.2.3", "1.2.x", ""]
)
def test_malformed_versions_are_refused(text: str) -> None:
    assert not is_semver(text)
    with pytest.raises(ValidationFailed, match="semantic version"):
        SemVer.parse(text)


@given(
    st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)),
)
def test_release_order_is_numeric_tuple_order(
    a: tuple[int, int, int], b: tuple[int, int, int]
) -> None:
    left, right = SemVer.parse(".".join(map(str, a))), SemVer.parse(".".join(map(str, b)))
    assert (left < right) == (a < b)
    assert (left == right) == (a == b)
    assert str(left) == ".".join(map(str, a))
