"""Which received message is handled next: fair between vehicles, ordered within one.

Why: messages used to be admitted in arrival order through one semaphore.
A vehicle that published 5,000 messages at full speed put 5,000 messages in
front of every other vehicle's next one, and those waited for the whole
flood (with a 30 s handler timeout, they were dead-lettered instead). Here:

* at most `slots` messages are handled at once (the gateway's Receive
  Maximum window);
* at most `per_key` of them belong to one vehicle (the key), so a flood
  occupies a few slots and the rest stay free for the fleet;
* a message that cannot start waits in its vehicle's FIFO queue, not
  acknowledged (so nothing is lost, and the broker's back-pressure holds);
* a freed slot goes to the next vehicle in a round robin of vehicles with
  waiting messages: an innocent vehicle's message waits for one slot to free
  up, never for another vehicle's backlog;
* a vehicle's messages start in the order they arrived (FIFO per key), and
  with `per_key=1` they are handled strictly one after the other.

All of it runs on the event loop thread: no locks. Memory is one dict entry
per vehicle with messages in flight or waiting, dropped when it has none.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Vehicle:
    active: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class FairScheduler:
    """Admission to handling: `slots` in total, `per_key` per key, round robin between keys."""

    def __init__(self, slots: int, per_key: int) -> None:
        if slots < 1 or per_key < 1:
            raise ValueError("slots and per_key must be at least 1")
        self.slots = slots
        self.per_key = per_key
        self._free = slots
        self._keys: dict[Hashable, _Vehicle] = {}
        # Keys with a waiting message and room under their own cap, in turn order.
        self._ready: deque[Hashable] = deque()
        self._in_ready: set[Hashable] = set()
        self._waiting = 0

    @property
    def active(self) -> int:
        """Messages admitted and not yet released."""
        return self.slots - self._free

    @property
    def waiting(self) -> int:
        """Messages waiting for a slot (received, not acknowledged, not started)."""
        return self._waiting

    def active_for(self, key: Hashable) -> int:
        vehicle = self._keys.get(key)
        return 0 if vehicle is None else vehicle.active

    def waiting_for(self, key: Hashable) -> int:
        vehicle = self._keys.get(key)
        return 0 if vehicle is None else len(vehicle.waiting)

    @property
    def keys(self) -> int:
        """Vehicles with messages in flight or waiting."""
        return len(self._keys)

    def try_acquire(self, key: Hashable) -> bool:
        """Take a slot now if this message may start at once (no coroutine: the common case).

        It may when a slot is free, its vehicle is under its cap and has no
        message queued before it (that would break its order). A free slot
        also means nobody else waits for one: `release` hands slots out at once.
        """
        vehicle = self._keys.get(key)
        if vehicle is None:
            if not self._free:
                return False
            vehicle = self._keys[key] = _Vehicle()
        elif not (self._free and vehicle.active < self.per_key and not vehicle.waiting):
            return False
        self._free -= 1
        vehicle.active += 1
        return True

    async def acquire(self, key: Hashable) -> None:
        """Wait for this message's turn; the caller must `release(key)` afterwards."""
        if self.try_acquire(key):
            return
        vehicle = self._keys.get(key)
        if vehicle is None:
            vehicle = self._keys[key] = _Vehicle()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        vehicle.waiting.append(turn)
        self._waiting += 1
        if vehicle.active < self.per_key:
            self._mark_ready(key)
        try:
            await turn
        except asyncio.CancelledError:
            if not turn.cancelled():
                self.release(key)  # granted, then cancelled before it could start
            elif turn in vehicle.waiting:  # not yet skipped by `_hand_out`
                vehicle.waiting.remove(turn)
                self._waiting -= 1
                self._forget_if_idle(key, vehicle)
            raise

    def release(self, key: Hashable) -> None:
        """The message of `key` is done (acknowledged): its slot goes to the next in turn."""
        vehicle = self._keys[key]
        vehicle.active -= 1
        self._free += 1
        if vehicle.waiting:
            self._mark_ready(key)
        else:
            self._forget_if_idle(key, vehicle)
        self._hand_out()

    def _mark_ready(self, key: Hashable) -> None:
        if key not in self._in_ready:
            self._in_ready.add(key)
            self._ready.append(key)

    def _hand_out(self) -> None:
        while self._free and self._ready:
            key = self._ready.popleft()
            self._in_ready.discard(key)
            vehicle = self._keys.get(key)
            if vehicle is None or vehicle.active >= self.per_key:
                continue  # full again: it re-enters the round on its next release
            waiting = vehicle.waiting
            while waiting and waiting[0].cancelled():  # its task was cancelled meanwhile
                waiting.popleft()
                self._waiting -= 1
            if not waiting:
                self._forget_if_idle(key, vehicle)
                continue
            turn = waiting.popleft()
            self._waiting -= 1
            self._free -= 1
            vehicle.active += 1
            turn.set_result(None)
            if waiting and vehicle.active < self.per_key:
                self._mark_ready(key)  # to the back of the round

    def _forget_if_idle(self, key: Hashable, vehicle: _Vehicle) -> None:
        if vehicle.active == 0 and not vehicle.waiting and self._keys.get(key) is vehicle:
            del self._keys[key]
