"""Time arguments of the dead-letter operations: `--since 2h`, `--since
2026-11-23T09:00Z`, `--older-than 7d`.

Pure and shared by `v2c dlq` and the `dlq_admin` Lambda, so an operator types
the same words in both. Durations are whole units only (`90m`, not `1.5h`) and
may be combined (`1d12h`); a date without a timezone is UTC, never the local
zone of whoever runs the command, because the records' clocks are UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

from v2c.contract.errors import InvalidInput

UNITS: Final[dict[str, timedelta]] = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_DURATION: Final = re.compile(r"(?:\d{1,9}[smhdw])+")
_PART: Final = re.compile(r"(\d{1,9})([smhdw])")
# Beyond SQS's 14 days and S3's 90-day lifecycle many times over: a typo.
MAX_DURATION: Final = timedelta(days=3650)


class InvalidTimeSpec(InvalidInput):
    """Neither a duration like `2h`/`7d`/`1d12h` nor an ISO 8601 date."""

    reason = "invalid_time_spec"


def parse_duration(text: str) -> timedelta:
    """`30s`, `15m`, `2h`, `7d`, `1w`, or a combination such as `1h30m`."""
    spec = text.strip().lower()
    if not _DURATION.fullmatch(spec):
        raise InvalidTimeSpec(
            f"invalid duration {text!r}: expected a number and a unit s/m/h/d/w, e.g. 2h or 7d"
        )
    total = sum((int(n) * UNITS[unit] for n, unit in _PART.findall(spec)), timedelta())
    if total > MAX_DURATION:
        raise InvalidTimeSpec(f"duration {text!r} is longer than {MAX_DURATION.days} days")
    return total


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidTimeSpec(
            f"invalid date {text!r}: expected ISO 8601, e.g. 2026-11-23 or 2026-11-23T09:00:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def cutoff_ms(text: str, now_s: float) -> int:
    """The instant (epoch ms) `text` names: `now - duration` or an absolute date."""
    spec = text.strip()
    if _DURATION.fullmatch(spec.lower()):
        return int((now_s - parse_duration(spec).total_seconds()) * 1000)
    try:
        return int(parse_instant(spec).timestamp() * 1000)
    except InvalidTimeSpec:
        raise InvalidTimeSpec(
            f"invalid time {text!r}: expected a duration (30m, 2h, 7d, 1d12h) "
            "or an ISO 8601 date (2026-11-23, 2026-11-23T09:00:00Z)"
        ) from None
