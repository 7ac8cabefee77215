"""Worker threads for handler calls, with results handed back to the event
loop in batches.

Handlers are blocking code (boto3), so they run off the loop. The standard
`loop.run_in_executor` costs, per call, a `concurrent.futures.Future` (a
Condition and an RLock), a second asyncio future chained to it, and one
self-pipe write to wake the loop: about a quarter of the gateway's per-message
CPU with a trivial handler (py-spy, docs/benchmarks.md). Here a worker
completes the asyncio future directly, and when results pile up faster than
the loop wakes, one wake-up delivers them all.

A Python thread cannot be stopped. When a caller gives up on a call that is
running (its timeout fired: `abandon`), the worker it occupies is written
off: it retires once the call returns, and a new worker takes its place at
once, so timed-out calls cannot starve the pool (a stuck handler used to
hold its worker until it returned, and the calls queued behind it timed out
in turn). The replacements are bounded (`max_abandoned`, by default as many
as `workers`): a handler that never returns costs at most that many extra
threads, after which the pool shrinks instead of growing without end.
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


class _Call:
    """A call a worker is running; `abandoned` once its caller gave up on it."""

    __slots__ = ("abandoned", "retire")

    def __init__(self) -> None:
        self.abandoned = False
        self.retire = False  # its worker leaves after it: a replacement took its place


class HandlerPool:
    """`workers` daemon threads running calls submitted from one event loop.

    Daemon threads: a process that exits without `shutdown()` (a crash) is
    not held open by them; what they were handling was not acknowledged yet,
    so the broker delivers it again.
    """

    def __init__(
        self, workers: int, name: str = "v2c-handler", *, max_abandoned: int | None = None
    ) -> None:
        if workers < 1:
            raise ValueError("a handler pool needs at least one worker")
        self._size = workers
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: collections.deque[_Done] = collections.deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._started = 0
        self._closed = False
        # Guards `_running`, the call states and the counters below, between
        # the workers and the loop thread (`abandon`).
        self._lock = threading.Lock()
        self._running: dict[asyncio.Future[Any], _Call] = {}
        self._spare = workers if max_abandoned is None else max_abandoned
        self._abandoned = 0
        self.replacements = 0  # workers started in place of one held by an abandoned call

    @property
    def abandoned(self) -> int:
        """Calls still running although their caller gave up on them (threads held)."""
        return self._abandoned

    @property
    def busy(self) -> int:
        """Calls running now, abandoned ones included."""
        return len(self._running)

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

    def abandon(self, future: asyncio.Future[Any]) -> bool:
        """The caller gave up on `future` (cancelled or failed it: a timeout). A call not
        started never runs; a running one keeps its thread until it returns,
        but that worker retires then, and a new one starts now, within the
        budget. Returns whether a replacement was started."""
        with self._lock:
            call = self._running.get(future)
            if call is None or call.abandoned:
                return False
            call.abandoned = True
            self._abandoned += 1
            if self._spare <= 0 or self._closed:
                return False
            self._spare -= 1
            call.retire = True
            self.replacements += 1
        assert self._loop is not None
        self._spawn()
        return True

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for _ in range(self._size):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}_{self._started}", daemon=True
        )
        self._started += 1
        thread.start()
        self._threads.append(thread)

    def _work(self) -> None:
        loop = self._loop
        assert loop is not None
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            with self._lock:
                if future.done():  # timed out or shut down before it started
                    continue
                call = self._running[future] = _Call()
            error: BaseException | None = None
            result: Any = None
            try:
                result = fn(*args)
            except BaseException as exc:  # delivered to the awaiting coroutine
                error = exc
            with self._lock:
                del self._running[future]
                if call.abandoned:
                    self._abandoned -= 1
                if call.retire:
                    self._spare += 1
            if not call.abandoned:
                # Append first, then look at the flag: `_deliver` clears the flag
                # before it empties the deque, so no result is ever left behind.
                self._done.append((future, result, error))
                if not self._wake_pending:
                    self._wake_pending = True
                    try:
                        loop.call_soon_threadsafe(self._deliver)
                    except RuntimeError:  # the loop is closed: nobody awaits any more
                        return
            if call.retire:
                return  # a replacement took this worker's place when the call was abandoned

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


def expire(call: asyncio.Future[Any]) -> None:
    """A call's timeout ran out (a `loop.call_later` timer): its awaiter gets
    `TimeoutError` now, a worker that has not started it skips it, and a late
    result is dropped. The caller then `abandon`s it."""
    if not call.done():
        call.set_exception(TimeoutError())
