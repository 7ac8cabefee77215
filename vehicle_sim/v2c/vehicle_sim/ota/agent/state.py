"""The update agent's state: one dataclass that every transition reads and moves.

What used to be spread over a three-level class chain (`UpdateAgent` over a
machine over a core, talking through private attributes) is this one value.
The transition functions (`offer`, `fetch`, `install`, `reporting`) take it
as their first argument, so what a transition may touch is visible in its
signature, and a test can build a state by hand.

`out` and `dirty` belong to the event being handled: `UpdateAgent` resets
them before each event and turns them into effects afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from v2c.contract.keyset import TrustedKeySet
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.agent.effects import Effect
from v2c.vehicle_sim.ota.agent.memory import ActiveUpdate, Memory, Phase
from v2c.vehicle_sim.ota.agent.vehicle_state import VehicleConditions


def new_memory(policy: AgentPolicy) -> Memory:
    return Memory(
        policy.remembered_updates,
        policy.remembered_notifications,
        policy.remembered_unverified,
        policy.remembered_commands,
    )


@dataclass(slots=True)
class AgentState:
    vehicle_id: str
    trusted: TrustedKeySet  # replace it when the vehicle receives a rotated key set
    policy: AgentPolicy
    memory: Memory
    active: ActiveUpdate | None = None
    conditions: VehicleConditions | None = None
    out: list[Effect] = field(default_factory=list)  # this event's effects, in order
    dirty: bool = False  # this event changed what must survive a power cut
    now: int = 0  # this event's time, epoch ms

    @property
    def active_update_id(self) -> str | None:
        return self.active.update_id if self.active is not None else None


def current(st: AgentState, update_id: str, phases: frozenset[Phase]) -> ActiveUpdate | None:
    """The active update if a port's callback is for it and expected now;
    a late callback (a cancelled download, a stale step) is ignored."""
    a = st.active
    if a is None or a.update_id != update_id or a.phase not in phases:
        return None
    return a


def require_active(st: AgentState) -> ActiveUpdate:
    if st.active is None:  # pragma: no cover - a bug in the machine
        raise AssertionError("no active update")
    return st.active


def running_version(st: AgentState) -> str:
    if st.conditions is not None:
        return st.conditions.installed_version
    return st.active.from_version if st.active is not None else ""
