"""A campaign whose vehicles report over MQTT to gateway processes, and the
exact-counter check at its end.

The tests of the batch path (`test_gateway_two_processes`,
`test_batch_throttling`) run the production `ota_status` handler in
`v2c gateway run` processes; the campaign side runs here, built as the
handlers build it (`ota.config.build_services`, from the environment the
stack exports), with a sink that only records: the vehicles' reports are
written by the test from the records in DynamoDB, whoever notified them.

Counters are read from the campaign item itself (`c_*`, `w<n>_*`), not
through `Campaign`, which clamps a negative count at zero and would hide a
report counted twice on the way down.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from v2c.contract.topics import Domain, Topic
from v2c.handlers.ota.config import OtaConfig, OtaServices, build_services
from v2c.handlers.ota.domain.counters import Counter as CampaignCounter
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import TERMINAL
from v2c.handlers.ota.notifier import SinkMessage
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.infra.local.wiring import handler_environment
from v2c.v1.ota_pb2 import OTAStatus

if TYPE_CHECKING:
    import pytest
    from moto_fixtures import AwsStack

S = OTAStatus.State
PATH = (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING, S.REBOOTING, S.VERIFYING)
FINAL_SEQUENCE = len(PATH) + 1
Message = tuple[str, bytes]


@dataclass
class RecordingSink:
    """Notifications recorded, never published: the test reports for the vehicles."""

    topics: list[str] = field(default_factory=list)

    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool:
        self.topics.append(topic)
        return True

    def send_many(self, messages: Sequence[SinkMessage]) -> list[bool]:
        self.topics.extend(m.topic for m in messages)
        return [True] * len(messages)


@contextmanager
def campaign_side(stack: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtaServices]:
    """The OTA services over moto, configured as the handlers are (KMS signer,
    the firmware catalog), notifying into a `RecordingSink`."""
    for name, value in handler_environment(stack.settings()).items():
        monkeypatch.setenv(name, value)
    services = build_services(OtaConfig.from_env(), sink=RecordingSink())
    try:
        yield services
    finally:
        services.close()


def start_campaign(ota: OtaServices, firmware_id: str, model: str, **spec: Any) -> str:
    """Create and start a campaign over every vehicle of `model`, its health
    thresholds out of the way (these tests count, they do not judge)."""
    body = {
        "name": f"{model} batch path",
        "firmware_id": firmware_id,
        "target_filter": f"model = '{model}'",
        "pause_threshold_percent": 100,
        "failure_threshold_percent": 100,
        **spec,
    }
    campaign_id = ota.campaigns.create(body).campaign.campaign_id
    ota.campaigns.start(campaign_id)
    return campaign_id


def records(ota: OtaServices, campaign_id: str) -> list[VehicleUpdate]:
    return list(ota.deps.updates.for_campaign(campaign_id))


def _status(update: VehicleUpdate, state: int, sequence: int, ok: bool) -> Message:
    installed = ""
    if state == S.COMPLETED:
        installed = update.to_version
    elif state == S.ROLLED_BACK:
        installed = update.from_version or "1.0.0"
    status = OTAStatus(
        vehicle_id=update.vehicle_id,
        update_id=update.update_id,
        state=state,  # type: ignore[arg-type]
        sequence=sequence,
        installed_version=installed,
    )
    topic = Topic(update.region, update.vehicle_id, Domain.OTA, "status")
    return str(topic), status.SerializeToString()


def report_messages(
    updates: Sequence[VehicleUpdate],
    failing: Callable[[str], bool],
    *,
    seed: int,
    duplicates: float = 0.3,
    shuffled: float = 0.5,
) -> list[Message]:
    """Every vehicle's seven reports (the last COMPLETED, or ROLLED_BACK when
    `failing(vehicle)`), the vehicles interleaved; a share of the vehicles
    send theirs out of order, and a share of the reports go twice, the copy
    right behind the original (the broker hands neighbours to different
    members of the share: both gateways decide on the same record at once)."""
    rng = random.Random(seed)
    queues: list[list[Message]] = []
    for update in updates:
        ok = not failing(update.vehicle_id)
        final = S.COMPLETED if ok else S.ROLLED_BACK
        own = [_status(update, state, n, ok) for n, state in enumerate(PATH, start=1)]
        own.append(_status(update, final, FINAL_SEQUENCE, ok))
        if rng.random() < shuffled:
            rng.shuffle(own)
        queue: list[Message] = []
        for message in own:
            queue.append(message)
            if rng.random() < duplicates:
                queue.append(message)
        queues.append(queue)
    interleaved: list[Message] = []
    while any(queues):
        for queue in queues:
            if queue:
                interleaved.append(queue.pop(0))
                if queue and queue[0] == interleaved[-1]:
                    interleaved.append(queue.pop(0))
    return interleaved


def terminal_count(ota: OtaServices, campaign_id: str) -> int:
    return sum(1 for u in records(ota, campaign_id) if u.state in TERMINAL)


def stored_counters(stack: AwsStack, campaign_id: str) -> dict[str, int]:
    """The campaign item's counter attributes as stored (negative ones included)."""
    item = stack.aws.client("dynamodb").get_item(
        TableName=stack.names.campaigns_table,
        Key={"campaign_id": {"S": campaign_id}},
        ConsistentRead=True,
    )["Item"]
    return {
        name: int(value["N"])
        for name, value in item.items()
        if re.fullmatch(r"(c|w\d+)_[a-z_]+", name) and "N" in value
    }


def assert_counters_exact(
    ota: OtaServices,
    stack: AwsStack,
    campaign_id: str,
    *,
    vehicles: int,
    rolled_back: int,
    completed: bool = True,
) -> None:
    """The campaign's counters, and each wave's, equal its records' states
    counted in DynamoDB; every vehicle has one record and it is terminal; the
    campaign completed (or, with `completed=False`, may still wait to be
    finished: by a dead dispatcher's lease, say)."""
    campaign = ota.campaigns.get(campaign_id)
    found = records(ota, campaign_id)
    assert len(found) == len({u.vehicle_id for u in found}) == vehicles
    stored = stored_counters(stack, campaign_id)
    states = Counter(u.state.value for u in found)
    assert states == Counter({"completed": vehicles - rolled_back, "rolled_back": rolled_back})
    for counter in CampaignCounter:
        assert stored.get(f"c_{counter.value}", 0) == states[counter.value], (counter, stored)
    for wave in range(len(campaign.waves)):
        in_wave = Counter(u.state.value for u in found if u.wave == wave)
        start = campaign.waves[wave - 1].end if wave else 0
        assert sum(in_wave.values()) == campaign.waves[wave].end - start, (wave, in_wave)
        for counter in CampaignCounter:
            attr = f"w{wave}_{counter.value}"
            assert stored.get(attr, 0) == in_wave[counter.value], (attr, stored)
    finished = {CampaignStatus.COMPLETED}
    allowed = finished if completed else finished | {CampaignStatus.IN_PROGRESS}
    assert campaign.status in allowed, campaign.status
