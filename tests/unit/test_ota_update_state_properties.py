"""Counters stay exact under any report order, duplication and interleaved commands."""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v2c.handlers.ota.domain.counters import CampaignCounters, Counter
from v2c.handlers.ota.domain.update_state import (
    COUNTER_OF,
    EDGES,
    FROM_PROTO,
    TERMINAL,
    Command,
    Outcome,
    UpdateRecord,
    UpdateState,
    apply_command,
    apply_report,
)

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
TO_PROTO = {state: value for value, state in FROM_PROTO.items()}


@dataclass(frozen=True)
class Report:
    vehicle: int
    state: UpdateState
    sequence: int


@dataclass(frozen=True)
class Cloud:
    vehicle: int
    command: Command


Event = Report | Cloud


@st.composite
def vehicle_paths(draw: st.DrawFn, vehicle: int) -> list[Report]:
    """A walk the vehicle agent could take, numbered 1..n as the agent numbers it."""
    state = UpdateState.NOTIFIED
    path: list[Report] = []
    for sequence in range(1, draw(st.integers(1, 12)) + 1):
        if state in TERMINAL:
            break
        options = sorted(s for s in EDGES[state] | {state} if s in TO_PROTO)
        state = draw(st.sampled_from(options))
        path.append(Report(vehicle, state, sequence))
    return path


@st.composite
def fleets(draw: st.DrawFn, with_commands: bool) -> tuple[int, list[list[Report]], list[Event]]:
    n = draw(st.integers(1, 6))
    paths = [draw(vehicle_paths(v)) for v in range(n)]
    events: list[Event] = [Cloud(v, Command.NOTIFY) for v in range(n)]
    for path in paths:
        events.extend(path)
    duplicates = draw(st.lists(st.sampled_from(events), max_size=10))
    events.extend(duplicates)
    if with_commands:
        commands = st.builds(Cloud, st.integers(0, n - 1), st.sampled_from(list(Command)))
        events.extend(draw(st.lists(commands, max_size=8)))
    return n, paths, draw(st.permutations(events))


def _run(n: int, events: list[Event]) -> tuple[dict[int, UpdateRecord], CampaignCounters]:
    records = {v: UpdateRecord() for v in range(n)}
    counters = CampaignCounters(pending=n)
    for event in events:
        record = records[event.vehicle]
        if isinstance(event, Report):
            transition = apply_report(record, TO_PROTO[event.state], event.sequence)
        else:
            transition = apply_command(record, event.command, max_retries=2)
        assert transition.before == record
        if not transition.changed:
            assert not transition.deltas
        records[event.vehicle] = transition.after
        counters = counters.apply(transition.deltas)  # raises if a counter went negative
        assert counters.total == n
        recount = Tally(COUNTER_OF[r.state] for r in records.values())
        assert all(counters.get(c) == recount[c] for c in Counter)
    return records, counters


@SETTINGS
@given(fleets(with_commands=False))
def test_any_order_and_duplication_ends_in_each_vehicles_last_reported_state(
    fleet: tuple[int, list[list[Report]], list[Event]],
) -> None:
    n, paths, events = fleet
    records, _ = _run(n, events)
    for vehicle, path in enumerate(paths):
        assert records[vehicle].state is path[-1].state
        assert records[vehicle].last_sequence == path[-1].sequence


@SETTINGS
@given(fleets(with_commands=True))
def test_counters_never_go_negative_and_always_sum_to_the_total_with_commands(
    fleet: tuple[int, list[list[Report]], list[Event]],
) -> None:
    n, _, events = fleet
    _run(n, events)


@SETTINGS
@given(fleets(with_commands=False))
def test_replaying_every_event_a_second_time_changes_nothing(
    fleet: tuple[int, list[list[Report]], list[Event]],
) -> None:
    n, _, events = fleet
    records, counters = _run(n, events)
    for event in events:
        if isinstance(event, Report):
            transition = apply_report(records[event.vehicle], TO_PROTO[event.state], event.sequence)
            assert transition.outcome is not Outcome.APPLIED
            assert not transition.deltas
    assert counters.total == n
