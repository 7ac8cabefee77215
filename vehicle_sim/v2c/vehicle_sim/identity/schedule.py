"""When a vehicle rotates its certificate: a check at connect, then one timer.

A fleet of 10,000 vehicles shares one event loop, so nothing here looks at a
certificate every second. `RenewalSchedule.check()` runs when the vehicle
connects: a certificate already due (`CertificateRenewal.due`) is rotated at
once, otherwise one loop timer is set for the moment it becomes due
(`CertificateRenewal.due_at`), in the fleet's simulated time (`SimTime`: at a
time scale of 0.01 a year's certificate becomes due after about 3.6 real days).
After a rotation the timer is set for the new certificate; after a refusal or
the files unwritable an hour of simulated time later, so a cloud that refuses
(too early by its own clock, say) is not asked in a loop; nor is it when it
issues a certificate that is due already. After no answer (`RenewalTimeout`)
five simulated minutes later: the cloud may have issued a certificate for the
staged key, and it keeps the old certificate active for an hour only (its
overlap), so the same key must ask again well before that (the answer then
is the same certificate).

The rotation waits for the connection (a CSR sent into a dead link would only
time out) and runs as its own task, so connecting never waits for the
cloud's answer; `stop()` cancels the timer and a rotation under way (the
files are written whole or not at all, `CertificateRenewal`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol

from v2c.vehicle_sim.identity.renewal import CertificateRenewal, RenewalTimeout, Renewed
from v2c.vehicle_sim.ota.device.sim_time import SimTime

logger = logging.getLogger(__name__)

RETRY_S: Final = 3600.0  # simulated seconds after a refused or unwritten rotation
# After no answer: well inside the cloud's one-hour overlap (`RETRY_S` would race it).
UNANSWERED_RETRY_S: Final = 300.0
# A loop timer may fire a hair before its moment (the clock's resolution):
# a little later, so the check then finds the certificate due.
LATE_S: Final = 0.001


class Connection(Protocol):
    """What the schedule needs of the vehicle's session (`AsyncMqttSession`)."""

    async def wait_connected(self) -> None: ...


class RenewalSchedule:
    """Rotates `renewal`'s certificate when it is due: `check()` after each
    connect, `handle_message` for the session's messages, `stop()` at the end.
    `renewal` reads the time from the same `sim` (`clock=sim.now`)."""

    __slots__ = (  # a fleet holds one per vehicle
        "_rotating",
        "_session",
        "_sim",
        "_timer",
        "failures",
        "last",
        "next_check_at",
        "renewal",
        "renewals",
    )

    def __init__(self, renewal: CertificateRenewal, session: Connection, sim: SimTime) -> None:
        self.renewal = renewal
        self._session = session
        self._sim = sim
        self._timer: asyncio.TimerHandle | None = None
        self._rotating: asyncio.Task[None] | None = None
        self.next_check_at: float | None = None  # simulated epoch seconds
        self.last: Renewed | None = None
        self.renewals = 0
        self.failures = 0

    @property
    def rotating(self) -> bool:
        return self._rotating is not None and not self._rotating.done()

    async def handle_message(self, topic: str, payload: bytes) -> bool:
        """True when the message was the cloud's answer (consumed here)."""
        return await self.renewal.handle_message(topic, payload)

    def check(self) -> None:
        """Rotate now if the certificate is due, else set the one timer for when it will be."""
        if self.rotating:
            return  # it sets the next timer itself
        self._cancel_timer()
        try:
            due = self.renewal.due()
            moment = self.renewal.due_at()
        except (OSError, ValueError) as exc:  # no readable certificate: nothing to time
            logger.warning("%s: certificate unreadable: %s", self.renewal.vehicle_id, exc)
            return
        if due:
            self._rotating = asyncio.create_task(
                self._rotate(), name=f"{self.renewal.vehicle_id}-certificate"
            )
        else:
            self._check_at(moment)

    def stop(self) -> None:
        self._cancel_timer()
        if self._rotating is not None:
            self._rotating.cancel()
            self._rotating = None

    async def _rotate(self) -> None:
        await self._session.wait_connected()
        try:
            self.last = await self.renewal.renew()
        except Exception as exc:  # the next attempt asks again with the staged key
            self.failures += 1
            retry_s = UNANSWERED_RETRY_S if isinstance(exc, RenewalTimeout) else RETRY_S
            logger.warning(
                "%s: certificate rotation failed (%s); again in %.0f simulated s",
                self.renewal.vehicle_id,
                exc,
                retry_s,
            )
            self._check_at(self._sim.now() + retry_s)
            return
        self.renewals += 1
        # a certificate issued already due (a short one) waits too, never a loop
        self._check_at(max(self.renewal.due_at(), self._sim.now() + RETRY_S))

    def _check_at(self, moment: float) -> None:
        self._cancel_timer()
        self.next_check_at = moment
        delay = self._sim.real_delay(moment - self._sim.now()) + LATE_S
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.check()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.next_check_at = None
