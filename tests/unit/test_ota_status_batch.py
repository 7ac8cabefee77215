"""The `ota_status` function fed by its queue: the reports of a batch applied
together and answered each on its own, refusals dead-lettered by the function
with their reason, only what a retry can mend named in `batchItemFailures`;
and invoked directly (a DLQ replay), one event whose error raises, as before
the queue."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from ota_service_harness import Ota, S
from prometheus_client import REGISTRY, CollectorRegistry

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import NotFound, Throttled, TransientError
from v2c.contract.events import build_event
from v2c.contract.queue_event import QueuedMessage, sqs_event
from v2c.contract.topics import Domain, Topic
from v2c.gateway.event import LambdaContext
from v2c.handlers import ota_status
from v2c.handlers.dlq.store import InMemoryDeadLetterStore
from v2c.handlers.ota.config import set_default_services
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.in_memory import InMemoryUpdateStore
from v2c.handlers.ota.status import StatusReport
from v2c.handlers.ota.status_batch import handle
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.v1.ota_pb2 import OTAStatus

REGION = "eu-west-1"
PROPERTIES = {"content_type": "application/x-protobuf", "user_properties": [["trace", "t-1"]]}


class FlakyUpdates(InMemoryUpdateStore):
    """The update table, throttling every read of the vehicles in `down_for`."""

    def __init__(self) -> None:
        super().__init__()
        self.down_for: set[str] = set()

    def find(self, vehicle_id: str, update_id: str) -> VehicleUpdate | None:
        if vehicle_id in self.down_for:
            raise Throttled("DynamoDB throttled the read")
        return super().find(vehicle_id, update_id)


@dataclass
class Services:
    """What the function takes of the container's `OtaServices`."""

    status: Any
    dead_letters: Any
    closed: list[bool] = field(default_factory=list)

    def close(self) -> None:
        self.closed.append(True)


@dataclass
class Scene:
    ota: Ota
    updates: FlakyUpdates
    dlq: InMemoryDeadLetterStore
    services: Services
    update_id: str
    vehicles: list[str]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def answer(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return handle(self.services, event, None, registry=self.registry)

    def state(self, vehicle: str) -> UpdateState:
        return self.updates.get(vehicle, self.update_id).state

    def dead_lettered(self, reason: str) -> float:
        labels = {"queue": "ota", "region": REGION, "message_type": "ota_status", "reason": reason}
        return self.registry.get_sample_value("v2c_dlq_messages_total", labels) or 0.0


@pytest.fixture
def scene() -> Scene:
    updates = FlakyUpdates()
    ota = Ota(update_store=updates)
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    dlq = InMemoryDeadLetterStore("ota")
    return Scene(ota, updates, dlq, Services(ota.status, dlq), update_id, ota.notified()[:3])


def report(vehicle: str, update_id: str, *, sequence: int = 1) -> dict[str, Any]:
    """The IoT event of one `.../ota/status` message, as the gateway builds it."""
    status = OTAStatus(vehicle_id=vehicle, update_id=update_id, state=S.ACCEPTED, sequence=sequence)
    return build_event(
        rule="ota_status",
        topic=str(Topic(REGION, vehicle, Domain.OTA, "status")),
        payload=status.SerializeToString(),
        qos=2,
        properties=PROPERTIES,
        received_at_ms=1_900_000_000_000,
    )


def batch(*events: dict[str, Any], receive_count: int = 1) -> dict[str, Any]:
    messages = [
        QueuedMessage(f"m{i}", event, 1_900_000_000_000, receive_count)
        for i, event in enumerate(events)
    ]
    return sqs_event(messages, queue="v2c-ota-status-ingest", region=REGION)


def status_reports(outcome: str) -> float:
    return REGISTRY.get_sample_value("v2c_ota_status_reports_total", {"outcome": outcome}) or 0.0


def test_a_report_naming_an_unknown_update_is_dead_lettered_alone(scene: Scene) -> None:
    first, middle, last = scene.vehicles
    unknown = report(middle, "no-such-release")
    applied, errors = status_reports("applied"), status_reports("error")

    response = scene.answer(
        batch(report(first, scene.update_id), unknown, report(last, scene.update_id))
    )

    assert response == {"batchItemFailures": []}  # the refusal is handled: never delivered again
    assert [scene.state(v) for v in (first, middle, last)] == [
        UpdateState.ACCEPTED,
        UpdateState.NOTIFIED,
        UpdateState.ACCEPTED,
    ]
    [record] = scene.dlq.list()
    assert record.reason == "not_found"
    assert (record.queue, record.direction, record.source) == (
        "ota",
        Direction.INBOUND,
        "ota_status",
    )
    assert (record.topic, record.vehicle_id) == (unknown["topic"], middle)
    sent = OTAStatus(vehicle_id=middle, update_id="no-such-release", state=S.ACCEPTED, sequence=1)
    assert record.payload == sent.SerializeToString()
    assert record.properties == PROPERTIES
    assert record.attempts == 1
    assert record.error.startswith("NotFound: ")
    assert "no-such-release" in record.error
    assert scene.dead_lettered("not_found") == 1
    assert status_reports("applied") - applied == 2
    assert status_reports("error") - errors == 1


def test_a_transient_failure_fails_that_record_alone_and_its_retry_applies_it(
    scene: Scene,
) -> None:
    first, middle, last = scene.vehicles
    scene.updates.down_for = {middle}

    response = scene.answer(batch(*(report(v, scene.update_id) for v in (first, middle, last))))

    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert [scene.state(v) for v in (first, last)] == [UpdateState.ACCEPTED] * 2
    scene.updates.down_for = set()
    assert scene.state(middle) is UpdateState.NOTIFIED
    assert scene.dlq.depth() == 0  # the queue keeps it, not the DLQ

    retry = scene.answer(batch(report(middle, scene.update_id), receive_count=2))

    assert retry == {"batchItemFailures": []}
    assert scene.state(middle) is UpdateState.ACCEPTED
    assert scene.dlq.depth() == 0


@pytest.mark.parametrize("body", ["not json {", "[1, 2]", ""])
def test_a_body_that_carries_no_event_is_dead_lettered_as_it_came(scene: Scene, body: str) -> None:
    event = batch(report(scene.vehicles[0], scene.update_id), {}, receive_count=2)
    event["Records"][1]["body"] = body

    assert scene.answer(event) == {"batchItemFailures": []}

    assert scene.state(scene.vehicles[0]) is UpdateState.ACCEPTED
    [record] = scene.dlq.list()
    assert (record.reason, record.source, record.topic) == ("invalid_input", "ota_status", "")
    assert (record.payload, record.vehicle_id, record.attempts) == (body.encode(), "", 2)
    assert "JSON" in record.error


def test_a_report_the_dead_letter_store_cannot_take_comes_back_from_the_queue(
    scene: Scene,
) -> None:
    class DownStore:
        def put(self, record: DeadLetterRecord) -> None:
            raise TransientError("SQS SendMessage failed")

    scene.services.dead_letters = DownStore()
    first, middle, _ = scene.vehicles

    response = scene.answer(
        batch(report(first, scene.update_id), report(middle, "no-such-release"))
    )

    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert scene.state(first) is UpdateState.ACCEPTED


def test_an_unexpected_exception_fails_its_record_only() -> None:
    class Broken:
        def ingest(self, event: Mapping[str, Any]) -> StatusReport:
            raise NotFound("no such update")

        def ingest_batch(
            self, events: Sequence[Mapping[str, Any]]
        ) -> list[StatusReport | Exception]:
            answers: list[StatusReport | Exception] = [NotFound("no such update")] * len(events)
            answers[1] = KeyError("a bug")
            return answers

    dlq = InMemoryDeadLetterStore("ota")
    events = [report("VIN-1HGBH41JXMN000001", "u") for _ in range(3)]

    response = handle(Services(Broken(), dlq), batch(*events), None, registry=CollectorRegistry())

    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert [r.reason for r in dlq.list()] == ["not_found", "not_found"]


def test_a_direct_invocation_is_one_event_whose_error_raises(scene: Scene) -> None:
    """A DLQ replay: the function raises, so the replayed record stays in the DLQ."""
    first, middle, _ = scene.vehicles

    assert scene.answer(report(first, scene.update_id)) == {
        "vehicle_id": first,
        "update_id": scene.update_id,
        "outcome": "applied",
        "state": "accepted",
        "reason": "notified -> accepted",
    }
    with pytest.raises(NotFound, match="no-such-release"):
        scene.answer(report(middle, "no-such-release"))
    assert scene.dlq.depth() == 0  # the handler writes no second record for a replay


@pytest.fixture
def installed(scene: Scene) -> Iterator[Scene]:
    set_default_services(scene.services)  # type: ignore[arg-type]
    yield scene
    set_default_services(None)


def test_the_lambda_handler_takes_a_queue_batch_and_a_direct_event(installed: Scene) -> None:
    scene = installed
    first, middle, _ = scene.vehicles

    def context() -> LambdaContext:
        return LambdaContext(function_name="ota_status", timeout_s=30)

    response = ota_status.lambda_handler(
        batch(report(first, scene.update_id), report(middle, "no-such-release")), context()
    )

    assert response == {"batchItemFailures": []}
    assert [r.reason for r in scene.dlq.list()] == ["not_found"]
    with pytest.raises(NotFound):
        ota_status.lambda_handler(report(middle, "no-such-release"), context())
    assert scene.dlq.depth() == 1
    assert scene.state(first) is UpdateState.ACCEPTED
