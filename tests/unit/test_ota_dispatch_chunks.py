"""Dispatch in chunks over the in-memory stores: one write per chunk of at most
99 targets, bounded by the step (`next_step`: wave, batch size, concurrency
window); counters exact; a dead-lettered message counted on its own; pause and
cancel take effect between chunks. The moto and broker version of the pause is
tests/integration/test_ota_chunk_pause_moto.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from ota_service_harness import Ota

from v2c.contract.errors import ConfigurationError
from v2c.handlers.dlq.store import InMemoryDeadLetterStore
from v2c.handlers.ota.campaigns.deps import MAX_NOTIFY_CHUNK, CampaignConfig
from v2c.handlers.ota.campaigns.dispatch import chunked
from v2c.handlers.ota.campaigns.record import StatusChange
from v2c.handlers.ota.config import OtaConfig, build_services
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import Target
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.in_memory_ports import RecordingNotifier
from v2c.handlers.ota.notifier import Notification, SinkMessage
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.signing.software import SoftwareSigner


@dataclass
class HookedNotifier(RecordingNotifier):
    """Records like `RecordingNotifier`; `failing` vehicles are dead-lettered,
    and `on_first_chunk` runs once, while the first chunk is being sent."""

    failing: frozenset[str] = frozenset()
    on_first_chunk: Callable[[], object] | None = None
    hooked: list[int] = field(default_factory=list)

    def send(self, note: Notification) -> bool:
        self.sent.append(note)
        return note.vehicle_id not in self.failing

    def send_many(self, notes: Sequence[Notification]) -> list[bool]:
        if self.on_first_chunk is not None and not self.hooked:
            self.hooked.append(len(notes))
            self.on_first_chunk()
        return super().send_many(notes)


def _pieces(notifier: RecordingNotifier) -> list[list[str]]:
    """The notified vehicles, chunk by chunk."""
    vehicles, pieces, at = notifier.vehicles(), [], 0
    for size in notifier.chunks:
        pieces.append(vehicles[at : at + size])
        at += size
    return pieces


def test_chunks_split_a_sequence_in_order_with_a_short_tail() -> None:
    targets = [Target(f"v{i}", "r", "m", "1.0.0") for i in range(7)]
    assert [len(c) for c in chunked(targets, 3)] == [3, 3, 1]
    assert [t for c in chunked(targets, 3) for t in c] == targets
    assert chunked([], 3) == []
    with pytest.raises(ValueError, match="at least one"):
        chunked(targets, 0)


@pytest.mark.parametrize("size", [0, MAX_NOTIFY_CHUNK + 1])
def test_a_chunk_never_exceeds_one_transaction(size: int) -> None:
    assert MAX_NOTIFY_CHUNK == 99  # + the campaign item: DynamoDB's 100 items
    with pytest.raises(ConfigurationError):
        CampaignConfig(notify_chunk=size)


def test_a_batch_is_written_in_chunks_of_99_within_the_concurrency_window() -> None:
    ota = Ota()
    campaign_id = ota.campaign(
        500, deployment_strategy="immediate", batch_size=200, max_concurrent_updates=230
    )
    started = ota.campaigns.start(campaign_id)
    # a batch of 200 (99 + 99 + 2), then the 30 the window has left
    assert ota.notifier.chunks == [99, 99, 2, 30]
    c = started.counters
    assert (started.cursor, c.in_progress, c.pending, c.total) == (230, 230, 270, 500)
    assert started.wave_counters[0].in_progress == 230
    records = list(ota.update_store.for_campaign(campaign_id))
    assert len(records) == 230
    assert {r.state for r in records} == {UpdateState.NOTIFIED}
    planned = [t.vehicle_id for t in ota.plans.read(campaign_id, 0, 230)]
    assert ota.notified() == planned  # in plan order, each once


def test_chunks_stay_inside_their_wave() -> None:
    ota = Ota(config=CampaignConfig(notify_chunk=4))
    campaign_id = ota.campaign(
        40, deployment_strategy="canary", canary_size=10, max_concurrent_updates=100
    )
    started = ota.campaigns.start(campaign_id)
    assert ota.notifier.chunks == [4, 4, 2]  # the canary wave only
    for vehicle in ota.notified():
        ota.finish(vehicle, started.release.update_id, ok=True)
    after = ota.campaigns.get(campaign_id)
    assert (after.current_wave, after.cursor) == (1, 40)
    assert ota.notifier.chunks == [4, 4, 2, 4, 4, 4, 4, 4, 4, 4, 2]
    update_id = started.release.update_id
    for piece in _pieces(ota.notifier):
        assert len({ota.update_store.get(v, update_id).wave for v in piece}) == 1
    assert [w.in_progress + w.completed for w in after.wave_counters] == [10, 30]


def test_one_advance_still_ends_after_its_batches() -> None:
    ota = Ota(config=CampaignConfig(max_batches_per_advance=1, notify_chunk=20))
    campaign_id = ota.campaign(
        120, deployment_strategy="immediate", batch_size=50, max_concurrent_updates=1000
    )
    assert ota.campaigns.start(campaign_id).cursor == 50
    assert ota.notifier.chunks == [20, 20, 10]
    report = ota.campaigns.advance(campaign_id)
    assert (report.notified, report.dead_lettered) == (50, 0)


def test_a_dead_lettered_message_in_a_chunk_counts_alone() -> None:
    failing = frozenset({"VIN-1HGBH41JXMN000003", "VIN-1HGBH41JXMN000011"})
    notifier = HookedNotifier(failing=failing)
    ota = Ota(config=CampaignConfig(notify_chunk=5), notifier=notifier)
    campaign_id = ota.campaign(12, deployment_strategy="immediate", max_concurrent_updates=12)
    ota.campaigns.start(campaign_id)  # `start` advances; advance once more to read a report
    assert ota.campaigns.advance(campaign_id).notified == 0
    assert notifier.chunks == [5, 5, 2]
    campaign = ota.campaigns.get(campaign_id)
    # both still count as notified (their records exist; the DLQ holds the messages)
    assert (campaign.cursor, campaign.counters.in_progress, campaign.counters.pending) == (
        12,
        12,
        0,
    )
    update_id = campaign.release.update_id
    for vehicle in failing:
        assert ota.update_store.get(vehicle, update_id).state is UpdateState.NOTIFIED


def test_the_advance_report_counts_dead_letters_per_message() -> None:
    failing = frozenset({"VIN-1HGBH41JXMN000001"})
    notifier = HookedNotifier(failing=failing)
    ota = Ota(config=CampaignConfig(notify_chunk=2), notifier=notifier)
    campaign_id = ota.campaign(5, deployment_strategy="immediate", max_concurrent_updates=5)
    campaign = ota.campaign_store.get(campaign_id)
    ota.campaign_store.change_status(campaign, StatusChange(CampaignStatus.IN_PROGRESS))
    report = ota.campaigns.advance(campaign_id)
    assert (report.notified, report.dead_lettered, report.status) == (5, 1, "in_progress")


def test_a_pause_during_a_chunk_stops_dispatch_before_the_next_one() -> None:
    notifier = HookedNotifier()
    ota = Ota(config=CampaignConfig(notify_chunk=10), notifier=notifier)
    campaign_id = ota.campaign(50, deployment_strategy="immediate", max_concurrent_updates=50)
    notifier.on_first_chunk = lambda: ota.campaigns.pause(campaign_id, "hold it")
    ota.campaigns.start(campaign_id)
    assert notifier.chunks == [10]
    first = [t.vehicle_id for t in ota.plans.read(campaign_id, 0, 10)]
    assert ota.notified() == first
    paused = ota.campaigns.get(campaign_id)
    c = paused.counters
    assert paused.status is CampaignStatus.PAUSED
    assert (paused.cursor, c.in_progress, c.pending) == (10, 10, 40)
    assert len(list(ota.update_store.for_campaign(campaign_id))) == 10

    resumed = ota.campaigns.resume(campaign_id)
    assert resumed.cursor == 50
    assert notifier.chunks == [10, 10, 10, 10, 10]
    assert ota.notified() == [t.vehicle_id for t in ota.plans.read(campaign_id, 0, 50)]
    assert (resumed.counters.in_progress, resumed.counters.pending) == (50, 0)


def test_a_cancel_during_a_chunk_leaves_the_rest_unnotified_and_counted() -> None:
    notifier = HookedNotifier()
    ota = Ota(config=CampaignConfig(notify_chunk=10), notifier=notifier)
    campaign_id = ota.campaign(50, deployment_strategy="immediate", max_concurrent_updates=50)
    notifier.on_first_chunk = lambda: ota.campaigns.cancel(campaign_id)
    ota.campaigns.start(campaign_id)
    assert notifier.chunks == [10]
    cancelled = ota.campaigns.get(campaign_id)
    c = cancelled.counters
    assert cancelled.status is CampaignStatus.CANCELLED
    assert (cancelled.cursor, c.pending, c.in_progress, c.cancelled) == (10, 0, 0, 50)
    assert c.total == cancelled.target_count == 50


# -- the stores' chunk write ------------------------------------------------------------


def _update(campaign_id: str, vehicle: str) -> VehicleUpdate:
    return VehicleUpdate.notified(
        vehicle_id=vehicle,
        update_id="r1",
        now_ms=1,
        kind=UpdateKind.CAMPAIGN,
        firmware_id="f",
        to_version="2.0.0",
        campaign_id=campaign_id,
        wave=0,
    )


def test_a_chunk_and_its_cursor_move_commit_together_or_not_at_all() -> None:
    ota = Ota()
    campaigns, updates = ota.campaign_store, ota.update_store
    campaign = campaigns.change_status(
        campaigns.get(ota.campaign(10)), StatusChange(CampaignStatus.IN_PROGRESS)
    )
    chunk = [_update(campaign.campaign_id, f"v{i}") for i in range(4)]
    assert updates.create_many(chunk, campaigns.notify_at_cursor(campaign, 1, 4))
    after = campaigns.get(campaign.campaign_id)
    assert (after.cursor, after.counters.in_progress, after.counters.pending) == (4, 4, 6)
    assert (after.wave_counters[0].in_progress, after.last_progress_at_ms) == (4, 1)
    # the same cursor again (a second dispatcher): nothing of the chunk is written
    again = [_update(campaign.campaign_id, f"w{i}") for i in range(3)]
    assert not updates.create_many(again, campaigns.notify_at_cursor(campaign, 2, 3))
    assert updates.find("w0", "r1") is None
    # one record of the chunk exists: nothing is written, the cursor stays
    fresh = campaigns.get(campaign.campaign_id)
    mixed = [_update(campaign.campaign_id, "x0"), chunk[0]]
    assert not updates.create_many(mixed, campaigns.notify_at_cursor(fresh, 3, 2))
    assert updates.find("x0", "r1") is None
    assert campaigns.get(campaign.campaign_id).cursor == 4
    # a paused campaign takes no chunk
    paused = campaigns.change_status(fresh, StatusChange(CampaignStatus.PAUSED))
    assert not updates.create_many(
        [_update(campaign.campaign_id, "y0")], campaigns.notify_at_cursor(paused, 4, 1)
    )
    assert campaigns.get(campaign.campaign_id).counters.in_progress == 4


def test_a_chunk_beyond_one_transaction_is_refused() -> None:
    ota = Ota()
    campaign = ota.campaign_store.get(ota.campaign(3))
    chunk = [_update(campaign.campaign_id, f"v{i}") for i in range(100)]
    with pytest.raises(ValueError, match="exceed one transaction"):
        ota.update_store.create_many(chunk, ota.campaign_store.notify_at_cursor(campaign, 1, 100))
    assert ota.update_store.find("v0", "r1") is None


# -- configuration --------------------------------------------------------------------


def test_the_chunk_size_comes_from_the_environment_within_one_transaction() -> None:
    assert OtaConfig.from_env({}).notify_chunk == 99
    assert OtaConfig.from_env({"OTA_NOTIFY_CHUNK": "50"}).notify_chunk == 50
    for bad in ("0", "100", "many"):
        with pytest.raises(ConfigurationError, match="OTA_NOTIFY_CHUNK"):
            OtaConfig.from_env({"OTA_NOTIFY_CHUNK": bad})


def test_the_services_dispatch_with_the_configured_chunk_size() -> None:
    session = boto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="eu-west-1"
    )
    services = build_services(
        OtaConfig(notify_chunk=25),
        session,
        sink=MqttLessSink(),
        signer=SoftwareSigner.generate(key_id="k"),
        dead_letters=InMemoryDeadLetterStore("ota"),
    )
    assert services.deps.config.notify_chunk == 25


class MqttLessSink:
    """A sink that is never called: building the services only wires it."""

    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool:
        raise AssertionError("nothing is sent while building")

    def send_many(self, messages: Sequence[SinkMessage]) -> list[bool]:
        raise AssertionError("nothing is sent while building")
