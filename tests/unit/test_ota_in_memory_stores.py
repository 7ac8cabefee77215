"""The in-memory stores keep the DynamoDB stores' contract (`stores.py`): a fake
kinder than the real store would hide the races the services must survive."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ota_service_harness import Ota

from v2c.contract.errors import Conflict, NotFound
from v2c.handlers.ota.campaigns.record import StatusChange
from v2c.handlers.ota.concurrency import StaleWrite
from v2c.handlers.ota.domain.counters import Counter, CounterDeltas, CounterMoves
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate

NOW_MS = 1_900_000_000_000


@pytest.fixture
def ota() -> Ota:
    return Ota()


def _update(campaign_id: str, vehicle: str = "v1") -> VehicleUpdate:
    return VehicleUpdate.notified(
        vehicle_id=vehicle,
        update_id="r1",
        now_ms=NOW_MS,
        kind=UpdateKind.CAMPAIGN,
        firmware_id="f",
        to_version="2.0.0",
        campaign_id=campaign_id,
        wave=0,
    )


def test_a_status_change_on_a_stale_read_writes_nothing(ota: Ota) -> None:
    store = ota.campaign_store
    read = store.get(ota.campaign(3))
    store.change_status(read, StatusChange(CampaignStatus.IN_PROGRESS))
    with pytest.raises(StaleWrite):
        store.change_status(read, StatusChange(CampaignStatus.CANCELLED))
    assert store.get(read.campaign_id).status is CampaignStatus.IN_PROGRESS


def test_a_bulk_move_is_conditioned_on_the_cursor(ota: Ota) -> None:
    store = ota.campaign_store
    campaign = store.get(ota.campaign(3))
    moved = campaign.evolve(cursor=1)
    with pytest.raises(StaleWrite):
        store.change_status(
            moved, StatusChange(CampaignStatus.CANCELLED), CounterMoves({Counter.PENDING: -2})
        )
    after = store.change_status(
        campaign,
        StatusChange(CampaignStatus.CANCELLED),
        CounterMoves({Counter.PENDING: -3, Counter.CANCELLED: 3}, {0: {Counter.CANCELLED: 3}}),
    )
    assert (after.counters.pending, after.counters.cancelled) == (0, 3)
    assert after.wave_counters[0].cancelled == 3


def test_a_record_and_its_cursor_move_commit_together_or_not_at_all(ota: Ota) -> None:
    campaigns, updates = ota.campaign_store, ota.update_store
    campaign = campaigns.change_status(
        campaigns.get(ota.campaign(3)), StatusChange(CampaignStatus.IN_PROGRESS)
    )
    assert updates.create(_update(campaign.campaign_id), campaigns.notify_at_cursor(campaign, 1))
    after = campaigns.get(campaign.campaign_id)
    assert (after.cursor, after.counters.in_progress, after.counters.pending) == (1, 1, 2)
    # the same cursor again (a second dispatcher): neither record nor counters move
    second = _update(campaign.campaign_id, vehicle="v2")
    assert not updates.create(second, campaigns.notify_at_cursor(campaign, 2))
    assert updates.find("v2", "r1") is None
    assert campaigns.get(campaign.campaign_id).cursor == 1
    # an existing record: the cursor does not move either
    fresh = campaigns.get(campaign.campaign_id)
    assert not updates.create(_update(campaign.campaign_id), campaigns.notify_at_cursor(fresh, 3))
    assert campaigns.get(campaign.campaign_id).cursor == 1


def test_a_save_on_a_stale_record_moves_no_counter(ota: Ota) -> None:
    campaigns, updates = ota.campaign_store, ota.update_store
    campaign_id = ota.campaign(3)
    update = _update(campaign_id)
    updates.create(update)
    cancel = CounterDeltas.move(Counter.PENDING, Counter.CANCELLED)
    after = update.with_machine(update.machine, reason="cancelled")
    stale = update.with_machine(replace(update.machine, last_sequence=5))
    with pytest.raises(StaleWrite):
        updates.save(stale, after, campaigns.move_counters(campaign_id, cancel, 0, NOW_MS))
    assert campaigns.get(campaign_id).counters.cancelled == 0
    updates.save(update, after, campaigns.move_counters(campaign_id, cancel, 0, NOW_MS))
    assert campaigns.get(campaign_id).counters.cancelled == 1
    assert campaigns.get(campaign_id).wave_counters[0].cancelled == 1


def test_leases_exclude_a_second_dispatcher_until_they_expire(ota: Ota) -> None:
    store = ota.campaign_store
    campaign = store.get(ota.campaign(3))
    assert store.acquire_lease(campaign, "a", NOW_MS, 1000) is not None
    assert store.acquire_lease(campaign, "a", NOW_MS + 1, 1000) is not None  # renewal
    assert store.acquire_lease(campaign, "b", NOW_MS + 500, 1000) is None
    assert store.acquire_lease(campaign, "b", NOW_MS + 1002, 1000) is not None
    store.release_lease(campaign.campaign_id, "a")  # not the holder: no effect
    assert store.acquire_lease(campaign, "c", NOW_MS + 1500, 1000) is None
    store.release_lease(campaign.campaign_id, "b")
    assert store.acquire_lease(campaign, "c", NOW_MS + 1500, 1000) is not None


def test_missing_and_duplicate_records_are_typed(ota: Ota) -> None:
    with pytest.raises(NotFound):
        ota.campaign_store.get("nope")
    with pytest.raises(NotFound):
        ota.update_store.get("v", "u")
    assert ota.update_store.find("v", "u") is None
    campaign = ota.campaign_store.get(ota.campaign(2))
    with pytest.raises(Conflict):
        ota.campaign_store.put_new(campaign)
