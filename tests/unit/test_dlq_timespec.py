"""Time arguments of `v2c dlq` and the dlq_admin Lambda: durations and dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from v2c.contract.errors import InvalidInput
from v2c.handlers.dlq.timespec import InvalidTimeSpec, cutoff_ms, parse_duration, parse_instant

NOW_S = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        ("1d12h", timedelta(hours=36)),
        (" 2H ", timedelta(hours=2)),
        ("0s", timedelta(0)),
    ],
)
def test_duration_in_units_and_combinations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d7", "7x", "-1d", "1.5h", "2 h", "h", "7d-", "1e3s"])
def test_malformed_duration_is_refused_with_a_typed_input_error(text: str) -> None:
    with pytest.raises(InvalidTimeSpec) as caught:
        parse_duration(text)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.reason == "invalid_time_spec"
    assert "s/m/h/d/w" in caught.value.detail


def test_absurdly_long_duration_is_taken_for_a_typo() -> None:
    with pytest.raises(InvalidTimeSpec, match="longer than"):
        parse_duration("99999w")


def test_date_without_offset_is_utc_not_the_local_zone() -> None:
    assert parse_instant("2026-11-23") == datetime(2026, 11, 23, tzinfo=UTC)
    assert parse_instant("2026-11-23T09:30:00") == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_date_with_offset_or_z_keeps_its_instant() -> None:
    assert parse_instant("2026-11-23T09:00:00Z") == datetime(2026, 11, 23, 9, tzinfo=UTC)
    assert parse_instant("2026-11-23T10:00:00+01:00") == datetime(2026, 11, 23, 9, tzinfo=UTC)


def test_cutoff_from_a_duration_counts_back_from_now() -> None:
    assert cutoff_ms("2h", NOW_S) == int((NOW_S - 7200) * 1000)
    assert cutoff_ms("0s", NOW_S) == int(NOW_S * 1000)


def test_cutoff_from_a_date_is_that_instant() -> None:
    expected = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
    assert cutoff_ms("2026-11-20", NOW_S) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "7x", "2026-13-01", "2h ago"])
def test_cutoff_that_is_neither_duration_nor_date_names_both_forms(text: str) -> None:
    with pytest.raises(InvalidTimeSpec) as caught:
        cutoff_ms(text, NOW_S)
    assert "duration" in caught.value.detail
    assert "ISO 8601" in caught.value.detail
