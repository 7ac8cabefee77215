"""The maintenance window of BR-OTA-028: `{"start": "HH:MM", "end": "HH:MM", "timezone": "TZ"}`.

A window is a daily span of local wall-clock time in a named IANA zone, so
"02:00-05:00 Europe/Berlin" follows daylight-saving changes the way a fleet
operator means it. A window whose end is earlier than its start crosses
midnight (22:00-04:00). Start equal to end would be either empty or the whole
day; neither is what anyone means, so it is refused.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from v2c.handlers.ota.domain.validation import CrossFieldProblems, FieldProblem, rule_error, shown

_HH_MM: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
# IANA keys are ASCII names like Europe/Berlin or Etc/GMT+5; anything else
# (paths, dots) never reaches the zoneinfo loader.
_ZONE_KEY: Final = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}")


def _clock(value: str) -> time:
    match = _HH_MM.fullmatch(value)
    if match is None:
        raise rule_error(f"must be a 24-hour time HH:MM, got {shown(value)}")
    return time(int(match[1]), int(match[2]))


class MaintenanceWindow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: str
    end: str
    timezone: str = "UTC"

    @field_validator("start", "end")
    @classmethod
    def _check_clock(cls, value: str) -> str:
        _clock(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        if len(value) <= 64 and _ZONE_KEY.fullmatch(value):
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                pass
            else:
                return value
        raise rule_error(
            f"must be an IANA time zone such as Europe/Berlin or UTC, got {shown(value)}"
        )

    @model_validator(mode="after")
    def _check_span(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise CrossFieldProblems(
                [FieldProblem("maintenance_window.end", "must differ from start")]
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def contains(self, moment: datetime) -> bool:
        """Is `moment` (timezone-aware) inside the window, in the window's own zone?"""
        if moment.tzinfo is None:
            raise ValueError("a maintenance window needs a timezone-aware datetime")
        local = moment.astimezone(self.zone).time().replace(tzinfo=None)
        start, end = _clock(self.start), _clock(self.end)
        if start < end:
            return start <= local < end
        return local >= start or local < end
