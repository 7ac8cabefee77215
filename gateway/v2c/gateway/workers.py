"""Worker threads for handler calls, with results handed back to the event
loop in batches.

Handlers are blocking code (boto3), so they run off the loop. The standard
`loop.run_in_executor` costs, per call, a `concurrent.futures.Future` (a
Condition and an RLock), a second asyncio future chained to it, and one
self-pipe write to wake the loop: about a quarter of the gateway's per-message
CPU with a trivial handler (py-spy, docs/benchmarks.md). Here a worker
completes the asyncio future directly, and when results pile up faster than
the loop wakes, one wake-up delivers them all.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]


class HandlerPool:
    """`workers` daemon threads running calls submitted from one event loop.

    Daemon threads: a process that exits without `shutdown()` (a crash) is
    not held open by them; what they were handling was not acknowledged yet,
    so the broker delivers it again.
    """

    def __init__(self, workers: int, name: str = "v2c-handler") -> None:
        if workers < 1:
            raise ValueError("a handler pool needs at least one worker")
        self._size = workers
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: collections.deque[_Done] = collections.deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `fn(*args)` on a worker; the returned future completes on the loop."""
        if self._closed:
            raise RuntimeError("the handler pool is shut down")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._start(loop)
        elif loop is not self._loop:
            raise RuntimeError("a handler pool serves the event loop that first used it")
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((future, fn, args))
        return future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for i in range(self._size):
            thread = threading.Thread(target=self._work, name=f"{self._name}_{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        loop = self._loop
        assert loop is not None
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if future.cancelled():  # timed out or shut down before it started
                continue
            error: BaseException | None = None
            result: Any = None
            try:
                result = fn(*args)
            except BaseException as exc:  # delivered to the awaiting coroutine
                error = exc
            # Append first, then look at the flag: `_deliver` clears the flag
            # before it empties the deque, so no result is ever left behind.
            self._done.append((future, result, error))
            if not self._wake_pending:
                self._wake_pending = True
                try:
                    loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: nobody awaits any more
                    return

    def _deliver(self) -> None:
        self._wake_pending = False
        done = self._done
        while done:
            future, result, error = done.popleft()
            if future.done():  # cancelled by a timeout meanwhile
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def shutdown(self) -> None:
        """Cancel calls not started yet and let the workers exit (without waiting
        for a call still running: it cannot be interrupted)."""
        self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
