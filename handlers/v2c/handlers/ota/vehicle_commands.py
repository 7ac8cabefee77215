"""Commands to vehicles: cancel an update, roll back (`OTACommand`; REQUEST_STATUS is
in the contract and the agent answers it, but the cloud sends none yet: ADR 0011).

The cloud's records alone cannot stop a vehicle: without a message, a vehicle
told nothing installs a cancelled update and its COMPLETED arrives after the
cancel. So every cancel and rollback the services decide is also a signed
command on the vehicle's own `.../commands/request` topic, at the QoS the
contract table sets for commands (1), with the broker's persistent session
holding it for a vehicle that is offline.

A command about a whole campaign is signed once and sent to each vehicle
(ADR 0004's reasoning: an HSM signs hundreds a second, a cancel must not wait
on 100,000 signatures); one about one vehicle names it inside the signature.
Ids are deterministic per decision (`v2c.contract.command.command_id`), so a
retried or repeated decision is the same command and a vehicle acts on it once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from v2c.contract.command import COMMAND_VALIDITY_MS, command_id
from v2c.contract.topics import Domain, Topic, qos_for
from v2c.handlers.ota.notifier import SCHEMA_VERSION, NotificationSink, SinkMessage
from v2c.handlers.signing.base import Signer
from v2c.handlers.signing.command import sign_command
from v2c.v1.command_pb2 import OTACommand, RollbackTrigger
from v2c.v1.common_pb2 import Header

COMMAND_SOURCE: Final = "ota.command"
Kind = OTACommand.Kind


@dataclass(frozen=True, slots=True)
class CommandTarget:
    vehicle_id: str
    region: str


class CommandSender(Protocol):
    """What the services call (`VehicleCommands`, or a recorder in tests)."""

    def send(self, command: OTACommand, targets: Sequence[CommandTarget]) -> list[bool]:
        """Sign `command` once and publish it to every target; one answer per
        target (False: dead-lettered, `v2c dlq replay` sends it again)."""
        ...


def cancel_update(
    *, campaign_id: str, update_id: str, reason: str, now_ms: int, vehicle_id: str = ""
) -> OTACommand:
    """Stop `update_id` on one vehicle, or (`vehicle_id` "") on every vehicle of the campaign."""
    return _command(
        Kind.CANCEL_UPDATE,
        campaign_id=campaign_id,
        update_id=update_id,
        vehicle_id=vehicle_id,
        reason=reason,
        now_ms=now_ms,
    )


def roll_back(
    *,
    campaign_id: str,
    update_id: str,
    reason: str,
    trigger: RollbackTrigger.ValueType,
    now_ms: int,
    vehicle_id: str = "",
    to_version: str = "",
) -> OTACommand:
    """`update_id` is being rolled back: a vehicle not yet installing it stops;
    one that installed it waits for the signed rollback manifest."""
    return _command(
        Kind.ROLL_BACK,
        campaign_id=campaign_id,
        update_id=update_id,
        vehicle_id=vehicle_id,
        reason=reason,
        now_ms=now_ms,
        trigger=trigger,
        to_version=to_version,
    )


def _command(
    kind: OTACommand.Kind.ValueType,
    *,
    campaign_id: str,
    update_id: str,
    vehicle_id: str,
    reason: str,
    now_ms: int,
    trigger: RollbackTrigger.ValueType = RollbackTrigger.ROLLBACK_TRIGGER_UNSPECIFIED,
    to_version: str = "",
) -> OTACommand:
    return OTACommand(
        command_id=command_id(
            OTACommand.Kind.Name(kind), campaign_id, update_id, vehicle_id, reason
        ),
        kind=kind,
        vehicle_id=vehicle_id,
        campaign_id=campaign_id,
        update_id=update_id,
        to_version=to_version,
        reason=reason,
        trigger=trigger,
        issued_at=now_ms,
        expires_at=now_ms + COMMAND_VALIDITY_MS,
    )


class VehicleCommands:
    """Signs once per command and publishes through the notification sink."""

    def __init__(
        self, sink: NotificationSink, signer: Signer, clock: Callable[[], float] = time.time
    ) -> None:
        self._sink = sink
        self._signer = signer
        self._clock = clock

    def send(self, command: OTACommand, targets: Sequence[CommandTarget]) -> list[bool]:
        if not targets:
            return []
        envelope = sign_command(self._signer, command)
        qos = qos_for(Domain.COMMANDS)
        messages = []
        for target in targets:
            envelope.header.CopyFrom(
                Header(
                    message_id=uuid.uuid4().bytes,
                    correlation_id=command.command_id,
                    timestamp=int(self._clock() * 1000),
                    schema_version=SCHEMA_VERSION,
                )
            )
            topic = Topic(target.region, target.vehicle_id, Domain.COMMANDS, "request")
            context = {
                "vehicle_id": target.vehicle_id,
                "command_id": command.command_id,
                "command": OTACommand.Kind.Name(command.kind),
                "update_id": command.update_id,
            }
            messages.append(
                SinkMessage(
                    str(topic),
                    envelope.SerializeToString(),
                    command.command_id,
                    context,
                    qos=qos,
                    source=COMMAND_SOURCE,
                )
            )
        return self._sink.send_many(messages)
