"""The gateway's admission of messages to handling: a total window, a cap per
vehicle, round robin between vehicles with waiting messages, arrival order
within one vehicle, and nothing leaked by a message whose task is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from v2c.gateway.runtime import vehicle_key
from v2c.gateway.scheduler import FairScheduler


async def _admitted(scheduler: FairScheduler, key: str, name: str, log: list[str]) -> None:
    await scheduler.acquire(key)
    log.append(name)


def _start(
    scheduler: FairScheduler, messages: list[tuple[str, str]], log: list[str]
) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(_admitted(scheduler, key, name, log)) for key, name in messages]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_flooding_vehicle_holds_at_most_its_cap_and_the_rest_of_the_window_stays_free() -> None:
    async def main() -> None:
        scheduler = FairScheduler(slots=8, per_key=2)
        log: list[str] = []
        tasks = _start(scheduler, [("flood", f"f{i}") for i in range(100)], log)
        await _settle()
        assert log == ["f0", "f1"]  # two in flight, 98 waiting in its own queue
        assert (scheduler.active, scheduler.waiting) == (2, 98)
        assert scheduler.try_acquire("innocent")  # a free slot at once, no queueing
        assert scheduler.active_for("innocent") == 1
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def test_freed_slots_go_round_robin_between_vehicles_each_in_arrival_order() -> None:
    async def main() -> None:
        scheduler = FairScheduler(slots=1, per_key=1)
        log: list[str] = []
        assert scheduler.try_acquire("busy")
        messages = [("a", f"a{i}") for i in range(3)] + [("b", f"b{i}") for i in range(3)]
        messages += [("c", "c0")]
        tasks = _start(scheduler, messages, log)
        await _settle()
        assert log == []
        scheduler.release("busy")
        for _ in range(7):
            await _settle()
            key = log[-1][0]
            scheduler.release(key)
        await asyncio.gather(*tasks)
        # a's backlog does not hold b or c back: one each in turn, FIFO per vehicle
        assert log == ["a0", "b0", "c0", "a1", "b1", "a2", "b2"]
        assert (scheduler.active, scheduler.waiting, scheduler.keys) == (0, 0, 0)

    asyncio.run(main())


def test_a_vehicle_at_its_cap_waits_even_with_free_slots_and_resumes_on_release() -> None:
    async def main() -> None:
        scheduler = FairScheduler(slots=10, per_key=1)
        log: list[str] = []
        tasks = _start(scheduler, [("v", "m0"), ("v", "m1")], log)
        await _settle()
        assert log == ["m0"]
        scheduler.release("v")
        await _settle()
        assert log == ["m0", "m1"]
        scheduler.release("v")
        await asyncio.gather(*tasks)
        assert scheduler.keys == 0

    asyncio.run(main())


def test_a_message_cancelled_while_waiting_or_just_granted_leaks_no_slot() -> None:
    async def main() -> None:
        scheduler = FairScheduler(slots=1, per_key=1)
        log: list[str] = []
        assert scheduler.try_acquire("x")
        waiting = _start(scheduler, [("a", "a0"), ("b", "b0")], log)
        await _settle()
        waiting[0].cancel()  # left while waiting
        scheduler.release("x")  # b0 is granted ...
        waiting[1].cancel()  # ... and cancelled before it ran: its slot comes back
        await asyncio.gather(*waiting, return_exceptions=True)
        assert (scheduler.active, scheduler.waiting, scheduler.keys) == (0, 0, 0)
        assert scheduler.try_acquire("c")

    asyncio.run(main())


@pytest.mark.parametrize(
    ("topic", "key"),
    [
        ("v2c/v1/eu-west-1/VIN-1HGBH41JXMN109186/telemetry/vehicle", "VIN-1HGBH41JXMN109186"),
        ("v2c/v1/eu-west-1/VIN-1/ota/status", "VIN-1"),
        ("not/a/v2c", "not/a/v2c"),
    ],
)
def test_messages_are_scheduled_under_the_vehicle_of_their_topic(topic: str, key: str) -> None:
    assert vehicle_key(topic) == key


def test_the_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairScheduler(slots=4, per_key=0)
