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


def test_a_call_abandoned_while_running_gets_its_worker_replaced_and_its_result_dropped() -> None:
    started, release = threading.Event(), threading.Event()

    def hang() -> str:
        started.set()
        release.wait(30)
        return "late"

    async def main() -> None:
        pool = HandlerPool(1)
        try:
            stuck = pool.submit(hang)
            assert await asyncio.to_thread(started.wait, 10)
            stuck.cancel()  # what the gateway's timeout does
            assert pool.abandon(stuck) is True
            assert (pool.abandoned, pool.replacements) == (1, 1)
            # The only worker is still inside `hang`, yet the pool serves calls.
            assert await pool.submit(sum, [1, 2, 3]) == 6
            release.set()
            for _ in range(3000):  # until the stuck call returns (a bound, not a verdict)
                if not pool.abandoned:
                    break
                await asyncio.sleep(0.01)
            assert pool.abandoned == 0
            assert stuck.cancelled()  # the late result went nowhere
            assert await pool.submit(len, "ok") == 2
        finally:
            release.set()
            pool.shutdown()

    asyncio.run(main())


def test_replacements_are_bounded_so_a_handler_that_never_returns_cannot_grow_threads() -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def hang() -> None:
        started.release()
        release.wait(30)

    async def main() -> None:
        pool = HandlerPool(1, max_abandoned=1)
        try:
            first = pool.submit(hang)
            assert await asyncio.to_thread(started.acquire, True, 10)
            first.cancel()
            assert pool.abandon(first) is True  # one replacement allowed
            second = pool.submit(hang)
            assert await asyncio.to_thread(started.acquire, True, 10)
            second.cancel()
            assert pool.abandon(second) is False  # budget spent: the pool shrinks instead
            assert (pool.abandoned, pool.replacements, pool.busy) == (2, 1, 2)
            release.set()
            assert await pool.submit(len, "back") == 4  # the kept thread serves again
        finally:
            release.set()
            pool.shutdown()

    asyncio.run(main())


def test_abandoning_a_call_that_never_started_or_already_finished_replaces_nothing() -> None:
    async def main() -> None:
        pool = HandlerPool(1)
        try:
            done = pool.submit(len, "x")
            await done
            assert pool.abandon(done) is False
            assert pool.replacements == 0
        finally:
            pool.shutdown()

    asyncio.run(main())
