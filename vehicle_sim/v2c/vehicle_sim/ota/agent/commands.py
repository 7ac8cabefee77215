"""Signed commands from the cloud (`OTACommand` on `.../commands/request`).

A command changes what the vehicle does, so it is trusted as a manifest is:
`v2c.contract.command.verify_command` with the agent's own key set and its
own vehicle id (a command for another vehicle, an expired one, a forged or
garbled one is answered with `Dropped` and changes nothing). A verified
command is acted on once: its id is remembered (bounded, persisted, like the
notification fingerprints), so the broker's redelivery of a QoS 1 message,
or the cloud's retried publish of the same decision, does nothing.

What each kind does to the update it names (`update_id`; a campaign-wide
command, `vehicle_id` "", names it too, so it matches the same way):

* CANCEL_UPDATE and ROLL_BACK, before the installation: what `offer.cancel`
  does (stop the download, discard the package, REJECTED CAMPAIGN_CANCELLED,
  the detail naming the command and its reason). For an update the agent
  has not seen yet (the command overtook its notification in the session)
  the id is remembered as cancelled, and the notification is refused with
  CAMPAIGN_CANCELLED when it comes.
* The same once installing (the slot write, the reboot, the checks): the
  update goes on (the A/B design cannot stop a slot write halfway safely,
  and the cloud refuses a cancel there too); the agent notes the late
  command and says so in the update's final report.
* After COMPLETED: nothing. A rollback needs a signed rollback manifest on
  `.../ota/available`; a command never changes the firmware by itself.
* REQUEST_STATUS: the last report of the named update (or of the active one)
  again, under the next sequence, as a new notification for the active
  update does (`reporting.rereport`).
"""

from __future__ import annotations

from v2c.contract.command import decode_envelope, verify_command
from v2c.contract.errors import InvalidInput
from v2c.v1.command_pb2 import OTACommand, OTACommandEnvelope
from v2c.vehicle_sim.ota.agent import offer, reporting
from v2c.vehicle_sim.ota.agent.checks import utc
from v2c.vehicle_sim.ota.agent.effects import Dropped
from v2c.vehicle_sim.ota.agent.memory import CANCELLABLE
from v2c.vehicle_sim.ota.agent.state import AgentState

Kind = OTACommand.Kind
STOPPING = frozenset({Kind.CANCEL_UPDATE, Kind.ROLL_BACK})


def commanded(st: AgentState, message: bytes | OTACommandEnvelope) -> None:
    command = _verified(st, message)
    if command is None or st.memory.acted_on(command.command_id):
        return
    st.memory.remember_command(command.command_id)
    st.dirty = True
    if command.kind in STOPPING:
        _stop(st, command)
    elif command.kind == Kind.REQUEST_STATUS:
        _request_status(st, command)
    else:
        st.out.append(Dropped(f"{describe(command)}: a kind this agent does not know"))


def _verified(st: AgentState, message: bytes | OTACommandEnvelope) -> OTACommand | None:
    try:
        envelope = message if isinstance(message, OTACommandEnvelope) else decode_envelope(message)
        return verify_command(
            envelope, trusted=st.trusted, now=utc(st.now), vehicle_id=st.vehicle_id
        )
    except InvalidInput as exc:  # SignatureInvalid and kin, CodecError, CommandRefused
        st.out.append(Dropped(f"command refused: {exc.detail}"))
        return None


def describe(command: OTACommand) -> str:
    """How a report or a log names a command: kind, id and the cloud's reason."""
    try:
        kind = Kind.Name(command.kind)
    except ValueError:  # a kind from a newer cloud
        kind = f"kind-{command.kind}"
    reason = f": {command.reason}" if command.reason else ""
    return f"{kind} command {command.command_id}{reason}"


def _stop(st: AgentState, command: OTACommand) -> None:
    update_id = command.update_id
    if not update_id:
        st.out.append(Dropped(f"{describe(command)} names no update"))
        return
    a = st.active
    if a is not None and a.update_id == update_id and a.phase not in CANCELLABLE:
        a.late_command = f"{describe(command)} came while {a.phase.value}; carried on"
        return
    offer.cancel(st, update_id, describe(command))


def _request_status(st: AgentState, command: OTACommand) -> None:
    update_id = command.update_id or st.active_update_id or ""
    memo = st.memory.memo(update_id) if update_id else None
    if memo is None or memo.last_status() is None:
        what = f"update {update_id}" if update_id else "an active update"
        st.out.append(Dropped(f"{describe(command)}: no report of {what} to send again"))
        return
    reporting.rereport(st, update_id)
