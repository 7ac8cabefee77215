"""The cloud's record of one vehicle's update, moved by `OTAStatus` reports and cloud commands.

Exactly-once in effect on an at-least-once transport (AWS IoT Core carries QoS
1 at most): a vehicle numbers its reports per update, and a report is applied
only if its sequence is above the last one applied. A duplicate or a stale
report changes nothing and says so, which makes the handler idempotent.

The sequence orders reports; the transition graph only rules out the
impossible. Reports may be lost or reordered, so a report is accepted if its
state is *reachable* from the current one (DOWNLOADING then COMPLETED, with the
install reports still in flight, is fine; once they arrive they are stale).
Leaving the install phase for the download phase, or reporting a state the
vehicle never sends, is refused as INVALID.

Terminal states absorb further reports, with one exception where the cloud
only guessed: a state the cloud decided (cancelled, timed out) yields to the
vehicle's own final word (COMPLETED, FAILED, ROLLED_BACK), because the vehicle
knows what it runs and a cancel may have raced an install.

A report about a notification the vehicle could not verify (`is_unverified`:
`notification_unverified`, or any REJECTED SIGNATURE_VERIFICATION_FAILED) names
its update by an id read from unverified bytes, and is numbered apart from
the update's reports: `apply_status` never applies it (UNVERIFIED), so a
forged notification reusing a real update id cannot end that update. Only
when the cloud has checked that the vehicle received exactly what it signed
(`OTAStatus.notification_sha256`) does `apply_confirmed_rejection` record the
rejection, and only while the vehicle has not taken the update on an earlier
delivery (NOTIFIED), as the cloud's conclusion (the vehicle's own final word
still replaces it); the record's sequence is left alone.

Two states are the cloud's own, never a vehicle's report:

* TIMED_OUT (BR-OTA-018/025): the monitor found the update in flight past
  its deadline (notified + timeout; a DEFERRED update waits for conditions
  but not forever). `Command.TIME_OUT` with retries left re-notifies instead
  (NOTIFIED again, `retries` + 1, a new deadline: BR-OTA-024); without, it
  ends TIMED_OUT, a failure for the rates, decided by the cloud, so the
  vehicle's late COMPLETED (it was installing, or offline) replaces it.
* WAITING (BR-OTA-014/023): the vehicle is busy with another update. Dispatch
  holds back a notification it recorded (`Command.HOLD`), or the vehicle
  answered REJECTED UPDATE_IN_PROGRESS (`apply_busy`: never a failure of the
  campaign that found it busy). `Command.NOTIFY` sends it once the vehicle is
  free; the vehicle takes a re-notification of an update it rejected busy.

Each transition carries the counter move (`CounterDeltas`) and the record it
started from, so a repository writes the new record and the counter move in
one conditional write (condition: the record is still `before`). A lost race
is then retried from the fresh record; counters stay exact under concurrency.
The machine's record has no reason (the vehicle's report and the command
carry it), so the writer adds the failure-reason move (`reason_moves`, from
the stored record before and after) to the transition's deltas.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from v2c.handlers.ota.domain.counters import Counter, CounterDeltas, ReasonMoves
from v2c.v1 import ota_pb2

State = ota_pb2.OTAStatus.State


class UpdateState(StrEnum):
    PENDING = "pending"  # created, not yet sent to the vehicle
    NOTIFIED = "notified"  # OTAUpdateAvailable published
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    DOWNLOADING = "downloading"
    PAUSED = "paused"
    DOWNLOADED = "downloaded"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    VERIFYING = "verifying"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"  # the cloud's deadline passed, no retry left
    WAITING = "waiting"  # recorded, not notified: the vehicle is busy with another update


S = UpdateState

COUNTER_OF: Final[Mapping[UpdateState, Counter]] = {
    S.PENDING: Counter.PENDING,
    # Once notified, the update is in the vehicle's hands: pausing a campaign
    # stops new notifications, and these finish on their own.
    S.NOTIFIED: Counter.IN_PROGRESS,
    S.ACCEPTED: Counter.IN_PROGRESS,
    S.DEFERRED: Counter.IN_PROGRESS,
    S.DOWNLOADING: Counter.IN_PROGRESS,
    S.PAUSED: Counter.IN_PROGRESS,
    S.DOWNLOADED: Counter.IN_PROGRESS,
    S.INSTALLING: Counter.IN_PROGRESS,
    S.REBOOTING: Counter.IN_PROGRESS,
    S.VERIFYING: Counter.IN_PROGRESS,
    S.COMPLETED: Counter.COMPLETED,
    S.FAILED: Counter.FAILED,
    S.REJECTED: Counter.FAILED,  # the update did not happen and will not on its own
    S.ROLLED_BACK: Counter.ROLLED_BACK,
    S.CANCELLED: Counter.CANCELLED,
    S.TIMED_OUT: Counter.TIMED_OUT,
    S.WAITING: Counter.WAITING,
}

TERMINAL: Final = frozenset(
    {S.COMPLETED, S.FAILED, S.REJECTED, S.ROLLED_BACK, S.CANCELLED, S.TIMED_OUT}
)
VEHICLE_OUTCOMES: Final = frozenset({S.COMPLETED, S.FAILED, S.ROLLED_BACK})
# The updates counted as failures by reason (the campaign's `failures_by_reason`,
# and the statistics' fold over the records, which must agree).
FAILURE_STATES: Final = frozenset({S.FAILED, S.REJECTED, S.ROLLED_BACK, S.TIMED_OUT})
CANCELLABLE: Final = frozenset(
    {
        S.PENDING,
        S.WAITING,
        S.NOTIFIED,
        S.ACCEPTED,
        S.DEFERRED,
        S.DOWNLOADING,
        S.PAUSED,
        S.DOWNLOADED,
    }
)
INSTALL_PHASE: Final = frozenset({S.INSTALLING, S.REBOOTING, S.VERIFYING})
# The vehicle holds the update: what a deadline applies to, and what makes
# the vehicle busy for every other update (a DEFERRED one included).
IN_FLIGHT: Final = frozenset(
    {S.NOTIFIED, S.ACCEPTED, S.DEFERRED, S.DOWNLOADING, S.PAUSED, S.DOWNLOADED} | INSTALL_PHASE
)
# Recorded but not (or no longer) with the vehicle: queued behind another update.
QUEUED: Final = frozenset({S.PENDING, S.WAITING})

# One step of the update as the vehicle agent walks it (FMEA phases 1-3).
EDGES: Final[Mapping[UpdateState, frozenset[UpdateState]]] = {
    S.PENDING: frozenset({S.NOTIFIED, S.CANCELLED}),
    S.NOTIFIED: frozenset({S.ACCEPTED, S.REJECTED, S.DEFERRED, S.FAILED, S.CANCELLED}),
    # A vehicle found busy may still take the update from a delivery the
    # cloud did not count (a redelivered notification): it reports as notified.
    S.WAITING: frozenset({S.ACCEPTED, S.REJECTED, S.DEFERRED, S.FAILED, S.CANCELLED}),
    S.ACCEPTED: frozenset({S.DOWNLOADING, S.DEFERRED, S.FAILED, S.CANCELLED}),
    S.DEFERRED: frozenset(
        {S.ACCEPTED, S.REJECTED, S.DOWNLOADING, S.INSTALLING, S.FAILED, S.CANCELLED}
    ),
    S.DOWNLOADING: frozenset({S.PAUSED, S.DOWNLOADED, S.FAILED, S.CANCELLED}),
    S.PAUSED: frozenset({S.DOWNLOADING, S.FAILED, S.CANCELLED}),
    S.DOWNLOADED: frozenset({S.INSTALLING, S.DEFERRED, S.FAILED, S.CANCELLED}),
    S.INSTALLING: frozenset({S.REBOOTING, S.FAILED, S.ROLLED_BACK}),
    S.REBOOTING: frozenset({S.VERIFYING, S.FAILED, S.ROLLED_BACK}),
    S.VERIFYING: frozenset({S.COMPLETED, S.FAILED, S.ROLLED_BACK}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.REJECTED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.CANCELLED: frozenset(),
    S.TIMED_OUT: frozenset(),
}


def _closure(
    edges: Mapping[UpdateState, frozenset[UpdateState]],
) -> dict[UpdateState, frozenset[UpdateState]]:
    reachable: dict[UpdateState, frozenset[UpdateState]] = {}
    for start in edges:
        seen: set[UpdateState] = set()
        frontier = [start]
        while frontier:
            for nxt in edges[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        reachable[start] = frozenset(seen)
    return reachable


REACHABLE: Final = _closure(EDGES)

FROM_PROTO: Final[Mapping[int, UpdateState]] = {
    State.ACCEPTED: S.ACCEPTED,
    State.REJECTED: S.REJECTED,
    State.DEFERRED: S.DEFERRED,
    State.DOWNLOADING: S.DOWNLOADING,
    State.PAUSED: S.PAUSED,
    State.DOWNLOADED: S.DOWNLOADED,
    State.INSTALLING: S.INSTALLING,
    State.REBOOTING: S.REBOOTING,
    State.VERIFYING: S.VERIFYING,
    State.COMPLETED: S.COMPLETED,
    State.FAILED: S.FAILED,
    State.ROLLED_BACK: S.ROLLED_BACK,
}


class Outcome(StrEnum):
    APPLIED = "applied"  # the record changed (state, or only the sequence for progress)
    DUPLICATE = "duplicate"  # the sequence was already applied
    STALE = "stale"  # an older sequence than the last applied
    TERMINAL = "terminal"  # the update has ended; the report changes nothing
    INVALID = "invalid"  # no such move from the current state
    NOOP = "noop"  # a command with nothing to do (already done)
    REFUSED = "refused"  # a command not allowed in this state
    UNVERIFIED = "unverified"  # about a notification the vehicle could not verify: never applied


class Command(StrEnum):
    NOTIFY = "notify"  # the notification was published
    CANCEL = "cancel"  # campaign or update cancelled (not once installing: E3-US3)
    TIME_OUT = "time_out"  # BR-OTA-018/025: past its deadline; re-notified while retries last
    HOLD = "hold"  # BR-OTA-014/023: recorded as notified, held back: the vehicle is busy
    RETRY = "retry"  # E3-US4 / BR-OTA-024: a failed update is scheduled again
    REVERT = "revert"  # a campaign rollback of this completed update finished


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """What the repository stores per (vehicle, update) for the machine."""

    state: UpdateState = S.PENDING
    last_sequence: int = 0  # vehicles number reports from 1
    retries: int = 0
    decided_by_cloud: bool = False  # a terminal state the cloud set; see module doc


_NO_MOVE: Final = CounterDeltas()


@dataclass(frozen=True, slots=True)
class Transition:
    outcome: Outcome
    before: UpdateRecord
    after: UpdateRecord
    reason: str
    deltas: CounterDeltas = _NO_MOVE

    @property
    def changed(self) -> bool:
        """Whether there is anything to write."""
        return self.after != self.before

    @property
    def affects_rates(self) -> bool:
        """The success / failure rates moved: evaluate thresholds now."""
        return self.deltas.affects_rates


def _move(before: UpdateRecord, after: UpdateRecord, outcome: Outcome, reason: str) -> Transition:
    deltas = CounterDeltas.move(COUNTER_OF[before.state], COUNTER_OF[after.state])
    return Transition(outcome, before, after, reason, deltas)


def _unchanged(record: UpdateRecord, outcome: Outcome, reason: str) -> Transition:
    return Transition(outcome, record, record, reason)


def apply_report(record: UpdateRecord, state: int, sequence: int) -> Transition:
    """Apply a vehicle's report (`OTAStatus.State` value and sequence) to the record."""
    target = FROM_PROTO.get(state)
    if target is None:
        return _unchanged(record, Outcome.INVALID, f"state {state} is not a vehicle report")
    if sequence == record.last_sequence:
        return _unchanged(record, Outcome.DUPLICATE, f"sequence {sequence} already applied")
    if sequence < record.last_sequence:
        return _unchanged(
            record, Outcome.STALE, f"sequence {sequence} is below {record.last_sequence}"
        )
    after = replace(record, state=target, last_sequence=sequence, decided_by_cloud=False)
    if record.state in TERMINAL:
        if record.decided_by_cloud and target in VEHICLE_OUTCOMES:
            return _move(
                record, after, Outcome.APPLIED, f"vehicle reports {target} after {record.state}"
            )
        return _unchanged(record, Outcome.TERMINAL, f"update already {record.state}")
    if target is record.state:
        return _move(record, after, Outcome.APPLIED, f"progress in {target}")
    if target not in REACHABLE[record.state]:
        return _unchanged(record, Outcome.INVALID, f"{target} cannot follow {record.state}")
    return _move(record, after, Outcome.APPLIED, f"{record.state} -> {target}")


def failure_reason(state: UpdateState, reason: str) -> str | None:
    """The reason a record in `state` counts under in failures by reason (its
    state's name when it has none), or None if it is not a failure."""
    return (reason or state.value) if state in FAILURE_STATES else None


def reason_moves(
    before: UpdateState, before_reason: str, after: UpdateState, after_reason: str
) -> ReasonMoves:
    """How a record's change moves the failures by reason: -1 for the reason
    it failed with, +1 for the one it fails with now; nothing when both are
    the same (or neither is a failure), which is nearly every change."""
    old = failure_reason(before, before_reason)
    new = failure_reason(after, after_reason)
    if old == new:
        return ()
    if old is None:
        return ((str(new), 1),)
    if new is None:
        return ((old, -1),)
    return ((old, -1), (new, 1))


def is_unverified(status: ota_pb2.OTAStatus) -> bool:
    """Whether `status` answers a notification the vehicle could not verify.

    A rejection for a failed signature is one by definition, flagged or not
    (an agent from before the flag): the vehicle never knew which update the
    bytes it rejected really belonged to."""
    return status.notification_unverified or (
        status.state == State.REJECTED
        and status.reason == ota_pb2.OTAStatus.SIGNATURE_VERIFICATION_FAILED
    )


def is_busy(status: ota_pb2.OTAStatus) -> bool:
    """Whether `status` says the vehicle is busy with another update."""
    return status.state == State.REJECTED and status.reason == ota_pb2.OTAStatus.UPDATE_IN_PROGRESS


def apply_status(record: UpdateRecord, status: ota_pb2.OTAStatus) -> Transition:
    """`apply_report` for a decoded `OTAStatus` message; a report about an
    unverified notification changes nothing (UNVERIFIED); a busy rejection
    queues the update (`apply_busy`)."""
    if is_unverified(status):
        return _unchanged(
            record, Outcome.UNVERIFIED, "the vehicle could not verify the notification it answers"
        )
    if is_busy(status):
        return apply_busy(record, status.sequence)
    return apply_report(record, status.state, status.sequence)


def apply_busy(record: UpdateRecord, sequence: int) -> Transition:
    """REJECTED UPDATE_IN_PROGRESS: the vehicle holds another update. Not a
    failure of this update: it waits (WAITING) and is notified again once the
    vehicle is free. Numbered like any report; ignored once the update ended."""
    if sequence == record.last_sequence:
        return _unchanged(record, Outcome.DUPLICATE, f"sequence {sequence} already applied")
    if sequence < record.last_sequence:
        return _unchanged(
            record, Outcome.STALE, f"sequence {sequence} is below {record.last_sequence}"
        )
    if record.state in TERMINAL:
        return _unchanged(record, Outcome.TERMINAL, f"update already {record.state}")
    if S.REJECTED not in REACHABLE[record.state]:
        return _unchanged(record, Outcome.INVALID, f"a busy rejection cannot follow {record.state}")
    after = replace(record, state=S.WAITING, last_sequence=sequence, decided_by_cloud=False)
    return _move(record, after, Outcome.APPLIED, f"{record.state} -> waiting (vehicle busy)")


def apply_confirmed_rejection(record: UpdateRecord) -> Transition:
    """The vehicle rejected, as unverifiable, the very notification the cloud
    signed for this update (the caller compared `notification_sha256`): the
    update will not happen on it. Applied only while the update is NOTIFIED;
    once the vehicle reported taking it, an unverifiable copy changes nothing
    there. The report's sequence is not this update's numbering: untouched.
    The rejection counts as the cloud's conclusion (`decided_by_cloud`): if
    the vehicle in fact holds the update from an earlier delivery the cloud
    missed, its own final word still replaces it."""
    if record.state in TERMINAL:
        return _unchanged(record, Outcome.TERMINAL, f"update already {record.state}")
    if record.state is not S.NOTIFIED:
        return _unchanged(
            record, Outcome.UNVERIFIED, f"the vehicle holds the update ({record.state})"
        )
    after = replace(record, state=S.REJECTED, decided_by_cloud=True)
    return _move(record, after, Outcome.APPLIED, "notified -> rejected (signature verification)")


def apply_command(record: UpdateRecord, command: Command, *, max_retries: int = 3) -> Transition:
    """Apply a cloud-side decision. Commands do not touch the report sequence:
    the vehicle keeps numbering its reports for this update across retries."""
    return _COMMANDS[command](record, max_retries)


def _notify(record: UpdateRecord, _max_retries: int) -> Transition:
    if record.state not in QUEUED:
        return _unchanged(record, Outcome.NOOP, f"already {record.state}")
    return _move(record, replace(record, state=S.NOTIFIED), Outcome.APPLIED, "notified")


def _hold(record: UpdateRecord, _max_retries: int) -> Transition:
    if record.state is S.WAITING:
        return _unchanged(record, Outcome.NOOP, "already waiting")
    if record.state not in (S.PENDING, S.NOTIFIED):
        return _unchanged(record, Outcome.REFUSED, f"cannot hold back while {record.state}")
    after = replace(record, state=S.WAITING)
    return _move(record, after, Outcome.APPLIED, f"{record.state} -> waiting (vehicle busy)")


def _cancel(record: UpdateRecord, _max_retries: int) -> Transition:
    state = record.state
    if state in TERMINAL:
        return _unchanged(record, Outcome.NOOP, f"already {state}")
    if state not in CANCELLABLE:
        return _unchanged(record, Outcome.REFUSED, f"cannot cancel while {state}")
    after = replace(record, state=S.CANCELLED, decided_by_cloud=True)
    return _move(record, after, Outcome.APPLIED, f"cancelled while {state}")


def _time_out(record: UpdateRecord, max_retries: int) -> Transition:
    state = record.state
    if state not in IN_FLIGHT:
        return _unchanged(record, Outcome.NOOP, f"nothing to time out while {state}")
    if record.retries < max_retries:
        after = replace(record, state=S.NOTIFIED, retries=record.retries + 1)
        reason = f"timed out while {state}: notified again, retry {after.retries} of {max_retries}"
        return _move(record, after, Outcome.APPLIED, reason)
    after = replace(record, state=S.TIMED_OUT, decided_by_cloud=True)
    return _move(record, after, Outcome.APPLIED, f"timed out while {state}")


def _retry(record: UpdateRecord, max_retries: int) -> Transition:
    if COUNTER_OF[record.state] not in (Counter.FAILED, Counter.TIMED_OUT):
        reason = f"only a failed update is retried, not {record.state}"
        return _unchanged(record, Outcome.REFUSED, reason)
    if record.retries >= max_retries:
        reason = f"retry limit reached ({record.retries} of {max_retries})"
        return _unchanged(record, Outcome.REFUSED, reason)
    after = replace(record, state=S.PENDING, retries=record.retries + 1, decided_by_cloud=False)
    return _move(record, after, Outcome.APPLIED, f"retry {after.retries} of {max_retries}")


def _revert(record: UpdateRecord, _max_retries: int) -> Transition:
    if record.state is S.ROLLED_BACK:
        return _unchanged(record, Outcome.NOOP, "already rolled back")
    if record.state is not S.COMPLETED:
        reason = f"only a completed update is reverted, not {record.state}"
        return _unchanged(record, Outcome.REFUSED, reason)
    after = replace(record, state=S.ROLLED_BACK, decided_by_cloud=False)
    return _move(record, after, Outcome.APPLIED, "reverted by campaign rollback")


_COMMANDS: Final[Mapping[Command, Callable[[UpdateRecord, int], Transition]]] = {
    Command.NOTIFY: _notify,
    Command.CANCEL: _cancel,
    Command.TIME_OUT: _time_out,
    Command.HOLD: _hold,
    Command.RETRY: _retry,
    Command.REVERT: _revert,
}
