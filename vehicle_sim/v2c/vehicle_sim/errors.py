"""The simulated vehicle's own errors: failures of the device, not of a message.

They derive from `V2CError` so the simulator and the tools report them the
way they report every other failure (a `reason`), but they live with the
vehicle, not in the wire contract (`v2c.contract.errors`): the cloud never
receives one. What the cloud hears of them is the vehicle's OTA status report.
"""

from __future__ import annotations

from v2c.contract.errors import V2CError


class Unbootable(V2CError):
    """A simulated vehicle found no slot that boots (both A/B slots broken):
    the spec's "boot to recovery mode", which needs a workshop."""

    reason = "unbootable"
