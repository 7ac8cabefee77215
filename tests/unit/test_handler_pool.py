"""The gateway's handler pool: results, errors and cancellation reach the
awaiting coroutine exactly as `run_in_executor` would deliver them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from v2c.gateway.workers import HandlerPool


def test_results_of_many_concurrent_calls_each_reach_their_own_caller() -> None:
    async def main() -> list[int]:
        pool = HandlerPool(4)
        try:
            return list(await asyncio.gather(*(pool.submit(pow, i, 2) for i in range(500))))
        finally:
            pool.shutdown()

    assert asyncio.run(main()) == [i * i for i in range(500)]


def test_a_handler_exception_is_raised_in_the_awaiting_coroutine() -> None:
    def fail() -> None:
        raise KeyError("boom")

    async def main() -> None:
        pool = HandlerPool(1)
        try:
            with pytest.raises(KeyError, match="boom"):
                await pool.submit(fail)
            assert await pool.submit(len, "still serving") == 13
        finally:
            pool.shutdown()

    asyncio.run(main())


def test_a_call_cancelled_before_a_worker_takes_it_never_runs() -> None:
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        pool = HandlerPool(1)
        try:
            blocker = pool.submit(release.wait, 10)  # occupies the only worker
            queued = pool.submit(ran.append, "queued")
            queued.cancel()  # e.g. its timeout fired while it waited
            release.set()
            assert await blocker is True
            await pool.submit(ran.append, "after")
        finally:
            pool.shutdown()

    asyncio.run(main())
    assert ran == ["after"]


def test_a_timed_out_call_does_not_disturb_later_results() -> None:
    release = threading.Event()

    async def main() -> None:
        pool = HandlerPool(2)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await pool.submit(release.wait, 10)
            release.set()  # the stale result arrives for a future nobody awaits
            assert await pool.submit(sum, [1, 2, 3]) == 6
        finally:
            pool.shutdown()

    asyncio.run(main())


def test_submit_after_shutdown_is_refused_and_pending_calls_are_cancelled() -> None:
    started, release = threading.Event(), threading.Event()

    def block() -> bool:
        started.set()
        return release.wait(10)

    async def main() -> None:
        pool = HandlerPool(1)
        blocker = pool.submit(block)
        pending = pool.submit(len, "never")
        assert await asyncio.to_thread(started.wait, 10)  # the worker has taken `blocker`
        pool.shutdown()
        assert pending.cancelled()
        release.set()
        assert await blocker is True
        with pytest.raises(RuntimeError, match="shut down"):
            pool.submit(len, "x")

    asyncio.run(main())
