"""The update agent's pure core: values in, effects out, no I/O.

`UpdateAgent` (update_agent.py) routes each event to a transition function
of its phase (`offer`, `fetch`, `install`; `reporting` for the moves every
phase shares; `commands` for the cloud's signed commands) over one
`AgentState`. Around them: `checks` (accept / reject / defer, in the spec's
order), `update_steps` (the pre/post-update actions the agent allows),
`effects` (what the agent asks its runtime to do, and what the ports report
back), `memory` (what survives a power cut),
`reports`, `vehicle_state`, and the U-Boot rules (`bootloader`, `steps`)
that the device's flash model executes. Nothing here may import a network,
thread or event-loop library: `tests/unit/test_layering.py` checks it.
"""

from v2c.vehicle_sim.ota.agent.update_agent import UpdateAgent

__all__ = ["UpdateAgent"]
