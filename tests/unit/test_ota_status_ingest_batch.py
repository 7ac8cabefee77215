"""`StatusService` fed a batch: one read, a few transactions, one reaction per
campaign, and counters exactly those of applying the reports one by one
(over the in-memory stores: no moto)."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import Any

import pytest
from ota_service_harness import MODEL, REGIONS, TO_COMPLETION, Ota, S, fleet, vin

from v2c.contract.errors import Throttled
from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain import campaign_run
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import Outcome, UpdateState
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.in_memory import InMemoryUpdateStore, MemoryWrite
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.status import StatusReport, StatusService
from v2c.handlers.ota.stores import CampaignWrite, RecordsRead, UpdateKey
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.v1.ota_pb2 import OTAStatus

Change = tuple[VehicleUpdate, VehicleUpdate]


class CountingUpdates(InMemoryUpdateStore):
    """The update table, keeping every batch read and every transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[UpdateKey]] = []
        self.saves: list[tuple[list[Change], list[CampaignWrite]]] = []
        self.counting = True

    def find_reported(self, keys: Collection[UpdateKey]) -> RecordsRead:
        if self.counting:
            self.reads.append(list(keys))
        return super().find_reported(keys)

    def save_reported(
        self, changes: Sequence[Change], with_campaigns: Sequence[CampaignWrite] = ()
    ) -> None:
        if self.counting:
            self.saves.append((list(changes), list(with_campaigns)))
        super().save_reported(changes, with_campaigns)

    def forget(self) -> None:
        self.reads.clear()
        self.saves.clear()


def status(vehicle: str, update_id: str, state: int, sequence: int, **fields: Any) -> OTAStatus:
    return OTAStatus(
        vehicle_id=vehicle,
        update_id=update_id,
        state=state,  # type: ignore[arg-type]
        sequence=sequence,
        **fields,
    )


def to_verifying(vehicle: str, update_id: str) -> list[OTAStatus]:
    return [status(vehicle, update_id, s, n) for n, s in enumerate(TO_COMPLETION, start=1)]


def ending(vehicle: str, update_id: str, *, ok: bool, to: str = "2.0.0") -> OTAStatus:
    if ok:
        return status(vehicle, update_id, S.COMPLETED, 7, installed_version=to)
    return status(vehicle, update_id, S.ROLLED_BACK, 7, installed_version="1.0.0")


def whole_update(vehicle: str, update_id: str, *, ok: bool, to: str = "2.0.0") -> list[OTAStatus]:
    return [*to_verifying(vehicle, update_id), ending(vehicle, update_id, ok=ok, to=to)]


def two_campaigns(ota: Ota, each: int, **spec: Any) -> list[tuple[str, str, list[str]]]:
    """An Accord and a Civic campaign of `each` vehicles, both started and
    fully notified: (campaign id, release id, vehicles) per campaign."""
    ota.fleet.put(fleet(each))
    civics = [
        Vehicle(vin(i), "Civic", REGIONS[i % 3], year=2024, installed_version="1.0.0")
        for i in range(each, 2 * each)
    ]
    ota.fleet.put(civics)
    accord = ota.package("2.0.0")
    civic = ota.packages.add(
        Package("c" * 32, "fw", "2.0.0", "Civic", 1024, "0" * 64, available=True)
    )
    made = []
    for package, model in ((accord, MODEL), (civic, "Civic")):
        body = {
            "name": model,
            "firmware_id": package.firmware_id,
            "target_filter": f"model = '{model}'",
            "deployment_strategy": "immediate",
            "batch_size": each,
            "max_concurrent_updates": each,
            **spec,
        }
        campaign_id = ota.campaigns.create(body).campaign.campaign_id
        before = len(ota.notified())
        update_id = ota.campaigns.start(campaign_id).release.update_id
        made.append((campaign_id, update_id, ota.notified()[before:]))
    return made


def outcomes(answers: Sequence[object]) -> list[Outcome]:
    return [a.outcome for a in answers if isinstance(a, StatusReport)]


def picture(ota: Ota, campaign_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """What must not depend on how the reports were grouped."""
    shown = []
    for campaign_id in campaign_ids:
        c: Campaign = ota.campaigns.get(campaign_id)
        states = sorted(
            (u.vehicle_id, u.state.value) for u in ota.update_store.for_campaign(c.campaign_id)
        )
        shown.append((c.status, c.counters, c.wave_counters, states))
    return shown


def test_100_reports_of_two_campaigns_are_one_read_and_a_counter_write_per_campaign_and_chunk() -> (
    None
):
    updates = CountingUpdates()
    ota = Ota(update_store=updates)
    # Thresholds one failure in 10 finished cannot cross: one by one, a failure
    # among the first 20 finished would pause the campaign, which a batch judged
    # on its total does not (the judgement is the same, the moment differs).
    calm = {"pause_threshold_percent": 20, "failure_threshold_percent": 50}
    made = two_campaigns(ota, 50, **calm)
    ota.status.apply_batch([s for _, u, vs in made for v in vs for s in to_verifying(v, u)])
    last = [ending(v, u, ok=n > 0) for _, u, vs in made for n, v in enumerate(vs)]
    random.Random(7).shuffle(last)
    updates.forget()

    answers = ota.status.apply_batch(last)

    assert outcomes(answers) == [Outcome.APPLIED] * 100
    assert [len(keys) for keys in updates.reads] == [100]  # one BatchGetItem's worth
    assert len(updates.saves) == 2  # 100 records + 2 counter writes: two transactions
    for changes, writes in updates.saves:
        assert len(changes) + len(writes) <= 100
        touched = {before.campaign_id for before, _ in changes}
        assert sorted(w.campaign_id for w in writes if isinstance(w, MemoryWrite)) == sorted(
            touched
        )
    for campaign_id, _, _ in made:
        counters = ota.campaigns.get(campaign_id).counters
        assert (counters.completed, counters.rolled_back, counters.in_progress) == (49, 1, 0)
        assert ota.campaigns.get(campaign_id).status is CampaignStatus.COMPLETED

    one_by_one = Ota()
    made_again = two_campaigns(one_by_one, 50, **calm)
    release = {v: u for _, u, vs in made_again for v in vs}
    for _, u, vs in made_again:
        for v in vs:
            for s in to_verifying(v, u):
                one_by_one.status.apply(s)
    for s in last:  # the batch's reports, one at a time, in the batch's order
        one_by_one.status.apply(
            ending(s.vehicle_id, release[s.vehicle_id], ok=s.state == S.COMPLETED)
        )
    assert picture(ota, [c for c, _, _ in made]) == picture(
        one_by_one, [c for c, _, _ in made_again]
    )


def test_repeated_and_reordered_reports_in_one_batch_are_applied_once_in_sequence_order() -> None:
    ota = Ota()
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    first, second, _ = ota.notified()
    whole = whole_update(first, update_id, ok=True)
    batch = [
        status(second, update_id, S.DOWNLOADING, 2),
        *reversed(whole),
        status(second, update_id, S.ACCEPTED, 1),
        whole[-1],  # the completion, delivered twice
        status(second, update_id, S.ACCEPTED, 1),
    ]

    answers = ota.status.apply_batch(batch)

    assert outcomes(answers) == [
        Outcome.APPLIED,
        *[Outcome.APPLIED] * 7,
        Outcome.APPLIED,
        Outcome.DUPLICATE,
        Outcome.DUPLICATE,
    ]
    assert [a.state for a in answers[1:8] if isinstance(a, StatusReport)] == [
        "completed", "verifying", "rebooting", "installing", "downloaded", "downloading", "accepted"
    ]  # fmt: skip
    assert ota.update_store.get(first, update_id).state is UpdateState.COMPLETED
    record = ota.update_store.get(second, update_id)
    assert (record.state, record.last_sequence) == (UpdateState.DOWNLOADING, 2)
    counters = ota.campaigns.get(campaign_id).counters
    assert (counters.completed, counters.in_progress) == (1, 2)

    again = ota.status.apply_batch(batch)  # the queue delivers the whole batch again

    assert set(outcomes(again)) == {Outcome.DUPLICATE, Outcome.STALE}
    assert ota.campaigns.get(campaign_id).counters == counters


class RacingUpdates(CountingUpdates):
    """The update table shared with a second gateway, which applies `theirs`
    just before our first transaction commits: a race the single-threaded
    test arranges where two processes would meet by chance."""

    def __init__(self) -> None:
        super().__init__()
        self.other: StatusService | None = None
        self.theirs: list[OTAStatus] = []

    def save_reported(
        self, changes: Sequence[Change], with_campaigns: Sequence[CampaignWrite] = ()
    ) -> None:
        other, self.other = self.other, None
        if other is not None:  # the other gateway's read and write, not counted as ours
            self.counting = False
            other.apply_batch(self.theirs)
            self.counting = True
        super().save_reported(changes, with_campaigns)


@pytest.mark.parametrize("theirs_state", [S.COMPLETED, S.VERIFYING])
def test_a_record_that_lost_a_race_is_read_again_alone_and_counters_stay_exact(
    theirs_state: int,
) -> None:
    updates = RacingUpdates()
    ota = Ota(update_store=updates)
    campaign_id = ota.campaign(6, deployment_strategy="immediate", max_concurrent_updates=6)
    update_id = ota.campaigns.start(campaign_id).release.update_id
    vehicles = ota.notified()
    ota.status.apply_batch([s for v in vehicles for s in to_verifying(v, update_id)[:5]])
    contested = vehicles[2]
    ours = [
        s
        for v in vehicles
        for s in (status(v, update_id, S.VERIFYING, 6), ending(v, update_id, ok=True))
    ]
    theirs = status(contested, update_id, S.VERIFYING, 6)
    if theirs_state == S.COMPLETED:
        updates.theirs = [theirs, ending(contested, update_id, ok=True)]
    else:
        updates.theirs = [theirs]
    updates.other = StatusService(ota.deps, ota.campaigns)
    updates.forget()

    answers = ota.status.apply_batch(ours)

    assert updates.reads[1:] == [[(contested, update_id)]]  # only the record that moved
    mine = outcomes(answers)
    if theirs_state == S.COMPLETED:
        assert mine[4:6] == [Outcome.STALE, Outcome.DUPLICATE]
    else:
        assert mine[4:6] == [Outcome.DUPLICATE, Outcome.APPLIED]
    campaign = ota.campaigns.get(campaign_id)
    assert (campaign.counters.completed, campaign.counters.in_progress) == (6, 0)
    assert campaign.counters.total == 6
    assert campaign.status is CampaignStatus.COMPLETED


def test_a_chunk_refused_once_by_the_fake_is_written_on_the_second_try() -> None:
    updates = CountingUpdates()
    ota = Ota(update_store=updates)
    campaign_id = ota.campaign(4, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    updates.conflicts = 1
    updates.forget()

    answers = ota.status.apply_batch([status(v, update_id, S.ACCEPTED, 1) for v in ota.notified()])

    assert outcomes(answers) == [Outcome.APPLIED] * 4
    assert [len(keys) for keys in updates.reads] == [4, 1]
    assert len(updates.saves) == 2
    assert ota.campaigns.get(campaign_id).counters.in_progress == 4


def test_the_campaign_reacts_once_to_a_batch_and_its_gate_is_judged_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ota = Ota()
    campaign_id = ota.campaign(
        40, deployment_strategy="canary", canary_size=10, max_concurrent_updates=100
    )
    update_id = ota.campaigns.start(campaign_id).release.update_id
    canary = ota.notified()
    reactions: list[str] = []
    judged: list[object] = []
    on_outcome, evaluate_gate = ota.campaigns.on_outcome, campaign_run.evaluate_gate

    def counted_reaction(cid: str) -> Any:
        reactions.append(cid)
        return on_outcome(cid)

    def counted_gate(*args: Any, **kwargs: Any) -> Any:
        judged.append(args)
        return evaluate_gate(*args, **kwargs)

    monkeypatch.setattr(ota.campaigns, "on_outcome", counted_reaction)
    monkeypatch.setattr(campaign_run, "evaluate_gate", counted_gate)

    ota.status.apply_batch([s for v in canary for s in whole_update(v, update_id, ok=True)])

    assert reactions == [campaign_id]
    assert len(judged) == 1
    campaign = ota.campaigns.get(campaign_id)
    assert (campaign.gate or {}).get("verdict") == "pass"
    assert campaign.current_wave == 1
    assert len(ota.notified()) == 40
    assert ota.event_types().count("campaign.gate_passed") == 1


def test_a_failure_rate_crossed_in_one_batch_pauses_the_campaign_once() -> None:
    ota = Ota()
    campaign_id = ota.campaign(20, deployment_strategy="immediate", max_concurrent_updates=20)
    update_id = ota.campaigns.start(campaign_id).release.update_id
    batch = [
        s for n, v in enumerate(ota.notified()[:10]) for s in whole_update(v, update_id, ok=n >= 2)
    ]

    ota.status.apply_batch(batch)

    campaign = ota.campaigns.get(campaign_id)
    assert campaign.status is CampaignStatus.PAUSED
    assert ota.alerts.names() == ["campaign_auto_paused"]
    assert (campaign.counters.completed, campaign.counters.rolled_back) == (8, 2)


def test_a_failure_rate_crossed_in_one_batch_rolls_back_and_the_rollbacks_finish_in_one() -> None:
    ota = Ota()
    ota.package("1.0.0")
    campaign_id = ota.campaign(20, deployment_strategy="immediate", max_concurrent_updates=20)
    update_id = ota.campaigns.start(campaign_id).release.update_id
    batch = [
        s for n, v in enumerate(ota.notified()[:10]) for s in whole_update(v, update_id, ok=n >= 3)
    ]

    ota.status.apply_batch(batch)

    rolling = ota.campaigns.get(campaign_id)
    assert rolling.status is CampaignStatus.ROLLING_BACK
    assert ota.alerts.names() == ["campaign_auto_rollback"]
    assert rolling.counters.cancelled == 10
    rollbacks = ota.notifier.sent[20:]
    assert len(rollbacks) == 7

    answers = ota.status.apply_batch(
        [
            s
            for note in rollbacks
            for s in whole_update(note.vehicle_id, note.update_id, ok=True, to="1.0.0")
        ]
    )

    assert set(outcomes(answers)) == {Outcome.APPLIED}
    done = ota.campaigns.get(campaign_id)
    assert done.status is CampaignStatus.ROLLED_BACK
    assert (done.counters.rolled_back, done.counters.completed, done.counters.total) == (10, 0, 20)
    assert ota.fleet.get(rollbacks[0].vehicle_id).installed_version == "1.0.0"  # type: ignore[union-attr]


def test_a_crash_between_the_writes_and_the_reaction_is_made_good_by_the_redelivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ota = Ota()
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    batch = [s for v in ota.notified() for s in whole_update(v, update_id, ok=True)]
    on_outcome = ota.campaigns.on_outcome

    def crash(_campaign_id: str) -> Any:
        raise RuntimeError("the Lambda ran out of time")

    monkeypatch.setattr(ota.campaigns, "on_outcome", crash)
    with pytest.raises(RuntimeError):
        ota.status.apply_batch(batch)
    written = ota.campaigns.get(campaign_id)
    assert (written.counters.completed, written.status) == (3, CampaignStatus.IN_PROGRESS)

    monkeypatch.setattr(ota.campaigns, "on_outcome", on_outcome)
    again = ota.status.apply_batch(batch)  # nothing acknowledged: the queue delivers it again

    assert set(outcomes(again)) == {Outcome.STALE, Outcome.DUPLICATE}
    done = ota.campaigns.get(campaign_id)
    assert (done.counters.completed, done.status) == (3, CampaignStatus.COMPLETED)


def test_a_reaction_that_fails_for_now_sends_its_reports_back_and_they_make_it_react(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ota = Ota()
    campaign_id = ota.campaign(2, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    first, second = ota.notified()
    on_outcome = ota.campaigns.on_outcome
    calls: list[str] = []

    def throttled_once(cid: str) -> Any:
        calls.append(cid)
        if len(calls) == 1:
            raise Throttled("DynamoDB throttled the campaign read")
        return on_outcome(cid)

    monkeypatch.setattr(ota.campaigns, "on_outcome", throttled_once)
    batch = [*whole_update(first, update_id, ok=True), status(second, update_id, S.ACCEPTED, 1)]

    answers = ota.status.apply_batch(batch)

    assert all(isinstance(a, Throttled) for a in answers[:7])  # the ended record's reports
    assert isinstance(answers[7], StatusReport)  # the other record's report is done
    assert ota.campaigns.get(campaign_id).counters.completed == 1

    events_answers = ota.status.apply_batch(batch[:7])

    assert set(outcomes(events_answers)) == {Outcome.DUPLICATE, Outcome.STALE}
    assert calls == [campaign_id, campaign_id]


def test_a_batch_answers_every_report_in_order_with_its_own_error() -> None:
    from v2c.contract.events import build_event
    from v2c.contract.topics import Domain, Topic

    ota = Ota()
    campaign_id = ota.campaign(2, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    first, second = ota.notified()

    def event(vehicle: str, report: OTAStatus | bytes) -> dict[str, Any]:
        payload = report if isinstance(report, bytes) else report.SerializeToString()
        return build_event(
            rule="ota_status",
            topic=str(Topic("eu-west-1", vehicle, Domain.OTA, "status")),
            payload=payload,
            qos=2,
            properties={},
            received_at_ms=1_900_000_000_000,
        )

    answers = ota.status.ingest_batch(
        [
            event(first, status(first, update_id, S.ACCEPTED, 1)),
            event(second, status(second, "no-such-release", S.ACCEPTED, 1)),
            event(second, status(first, update_id, S.DOWNLOADING, 2)),  # names another vehicle
            event(second, b"\xff\xfe"),
            {"topic": "not a topic"},
            event(second, status(second, update_id, S.ACCEPTED, 1)),
        ]
    )

    kinds = [a.reason if not isinstance(a, StatusReport) else a.outcome for a in answers]
    assert kinds == [
        Outcome.APPLIED,
        "not_found",
        "invalid_input",
        "corrupt_payload",
        "invalid_topic",
        Outcome.APPLIED,
    ]
    assert ota.update_store.get(first, update_id).last_sequence == 1
