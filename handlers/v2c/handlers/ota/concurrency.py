"""Optimistic concurrency, once: a lost conditional write is read again and decided again.

Campaign and update records are written with a condition on what was read
(status, cursor, wave, state and sequence), because two gateways, the
monitor and an API call may act on one record at the same moment and a
lock would outlive a crashed Lambda. The loser of such a race gets
`StaleWrite` and starts over from a fresh read, where its decision may now
be different (or unnecessary). Every such loop in the OTA services goes
through `retry_stale`, so the number of attempts is one setting and giving
up reads the same everywhere. The one exception is a transaction of many
update records (`updates.reports`): it counts lost races per record with
the same setting, because one record that keeps changing must not hold
back the others of its chunk, and only the records a cancelled transaction
names as stale (`StaleRecords`) are read again.

`StaleWrite` is a `Conflict` (HTTP 409) so a caller that gives up, or does
not retry, answers exactly as before; it is a subclass so that the *rule*
conflicts a decision raises (`cannot pause a completed campaign`) are never
retried: re-reading cannot change their answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from v2c.contract.errors import Conflict

CONFLICT_RETRIES: Final = 8

T = TypeVar("T")


class StaleWrite(Conflict):
    """A conditional write lost to a concurrent writer: read again, decide again."""


class StaleRecords(StaleWrite):
    """A transaction of many update records lost on some of them (DynamoDB's
    cancellation reasons name them): only those are read and decided again,
    the others were not written either but still stand as read."""

    def __init__(self, message: str, keys: Iterable[tuple[str, str]]) -> None:
        super().__init__(message)
        self.keys = frozenset(keys)  # (vehicle_id, update_id) of each record that moved


def retry_stale(attempt: Callable[[], T], *, gave_up: str, attempts: int = CONFLICT_RETRIES) -> T:
    """Run `attempt` (read, decide, write) until its write is not stale.

    No wait between attempts: the other writer has already finished, so the
    fresh read sees its result at once. After `attempts` lost races the
    caller is told to try again later (`Conflict(gave_up)`)."""
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        retry=retry_if_exception_type(StaleWrite),
    )
    try:
        return retrying(attempt)
    except RetryError as exc:
        raise Conflict(gave_up) from exc.last_attempt.exception()
