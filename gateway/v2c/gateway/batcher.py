"""Collect a queue-fed rule's messages into batches, as an SQS event source mapping does.

A message admitted by the scheduler joins its rule's open batch; the batch
is handed to the handler when it holds `batch_size` records or when its
first record has waited `batch_window_ms` (Lambda's `BatchSize` and
`MaximumBatchingWindowInSeconds`), or at once when messages wait for the
slots its records hold (`hurry`). At most `max_concurrency` batches are in
the handler at once (the mapping's `ScalingConfig.MaximumConcurrency`): a
batch due meanwhile waits for a call to end, and the open batch goes on
filling. The handler gets the SQS event of `v2c.contract.queue_event` and
answers with a partial-batch response.

Each message's future settles only when its record succeeded or was
dead-lettered, and the gateway acknowledges the MQTT message then: a SIGKILL
mid-batch leaves every record of the batch unacknowledged in the broker, and a
record that failed never holds up its neighbours.

Failures, as SQS and Lambda treat them:
* a record named in `batchItemFailures`, or every record of a batch whose
  call raised, is delivered again in a later batch, up to `max_receive_count`
  receives; then it is dead-lettered with the last error;
* a call that outlives the rule's timeout is given up (its thread replaced by
  the pool) and its records dead-lettered at once as `handler_timeout`: a
  retry would only hold another thread for as long.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from v2c.contract.errors import BatchItemFailed, HandlerTimeout
from v2c.contract.queue_event import QueuedMessage, failed_item_ids, sqs_event
from v2c.gateway.event import LambdaContext, unique_id
from v2c.gateway.rules import Handler, Rule
from v2c.gateway.workers import HandlerPool


@dataclass(slots=True)
class PendingRecord:
    """One message waiting in, or travelling with, a batch."""

    message: QueuedMessage
    settled: asyncio.Future[bool]  # True: handled; False: dead-lettered
    last_error: Exception | None = None


DeadLetter = Callable[[PendingRecord, Exception], Awaitable[None]]


@dataclass
class RuleBatcher:
    """The open batch of one rule, and the calls of its full batches."""

    rule: Rule
    handler: Handler
    pool: HandlerPool
    dead_letter: DeadLetter
    log_stream: str = "gateway"
    region: str = "local"
    # True while messages wait for a slot that a batch's records hold: then a
    # batch goes on the loop's next turn instead of waiting out its window (with a per-vehicle
    # cap, a few flooding vehicles could never fill it, and would wait 20 ms
    # for every handful of records).
    hurry: Callable[[], bool] = lambda: False
    _open: list[PendingRecord] = field(default_factory=list)
    _timer: asyncio.TimerHandle | None = None
    _soon: asyncio.Handle | None = None
    _calls: set[asyncio.Task[None]] = field(default_factory=set)
    _due: deque[list[PendingRecord]] = field(default_factory=deque)  # full, waiting for a call
    batches: int = 0  # calls made: records / batches is the mean batch size

    async def submit(self, event: dict[str, Any], received_at_ms: int) -> bool:
        """Queue one message's event; returns once its record succeeded (True) or
        was dead-lettered (False); never raises for the record's own failure."""
        loop = asyncio.get_running_loop()
        record = PendingRecord(
            QueuedMessage(unique_id(), event, received_at_ms), loop.create_future()
        )
        self._add(record)
        return await record.settled

    def _add(self, record: PendingRecord) -> None:
        self._open.append(record)
        if len(self._open) >= self.rule.batch_size:
            self._flush()
        elif self.hurry():
            self.flush_soon()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.rule.batch_window_ms / 1000, self._flush
            )

    def flush_soon(self) -> None:
        """Hand the open batch over once the event loop has run what is ready now.

        When a batch's call ends, its slots are freed together and the waiting
        messages they admit resume in the same turn of the loop; flushing on
        the next turn, not at the first of them, keeps them in one batch
        (flushing at once made batches of one record under a flood)."""
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if not self._open:
            return
        if self._busy() and len(self._open) < self.rule.batch_size:
            return  # keeps filling; a call's end hands it over
        batch, self._open = self._open, []
        self._start(batch)

    def _busy(self) -> bool:
        limit = self.rule.max_concurrency
        return limit is not None and len(self._calls) >= limit

    def _start(self, batch: list[PendingRecord]) -> None:
        if self._busy():
            self._due.append(batch)
            return
        task = asyncio.create_task(self._call(batch))
        self._calls.add(task)
        task.add_done_callback(self._call_ended)

    def _call_ended(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        if self._due:
            self._start(self._due.popleft())
        elif self._open and (self._timer is None or self.hurry()):
            self._flush()  # its window ran out while every call was busy

    async def _call(self, batch: list[PendingRecord]) -> None:
        rule = self.rule
        self.batches += 1
        event = sqs_event([r.message for r in batch], queue=rule.queue, region=self.region)
        context = LambdaContext(
            function_name=rule.name, timeout_s=rule.timeout_s, log_stream_name=self.log_stream
        )
        call = self.pool.submit(self.handler, event, context)
        try:
            async with asyncio.timeout(rule.timeout_s):
                response = await call
            failed = failed_item_ids(response)
        except TimeoutError:
            self.pool.abandon(call)
            timeout = HandlerTimeout(f"handler {rule.handler} exceeded {rule.timeout_s}s")
            await asyncio.gather(*(self._give_up(r, timeout) for r in batch))
            return
        except Exception as exc:  # the whole batch failed, as Lambda sees a raise
            for record in batch:
                record.last_error = exc
            failed = {r.message.message_id for r in batch}
            # One poison record must not take its neighbours to the DLQ with
            # it: each is tried again alone (Lambda's BisectBatchOnFunctionError,
            # taken to the end at once).
            alone = len(batch) > 1
        else:
            alone = False
        retry: list[PendingRecord] = []
        for record in batch:
            if record.message.message_id not in failed:
                _settle(record, handled=True)
            elif record.message.receive_count >= rule.max_receive_count:
                error = record.last_error or BatchItemFailed(
                    f"handler reported the record failed on {record.message.receive_count}"
                    f" receive(s) (max_receive_count {rule.max_receive_count})"
                )
                await self._give_up(record, error)
            else:
                retry.append(record)
        for record in retry:
            message = record.message
            record.message = QueuedMessage(
                message.message_id, message.event, message.sent_at_ms, message.receive_count + 1
            )
            if alone:
                self._start([record])
            else:
                self._add(record)

    async def _give_up(self, record: PendingRecord, error: Exception) -> None:
        """Dead-letter the record, then let its message be acknowledged. If even
        the dead-letter write fails, the message's submitter raises and the
        message stays unacknowledged (the broker delivers it again)."""
        try:
            await self.dead_letter(record, error)
        except BaseException as exc:
            if not record.settled.done():
                record.settled.set_exception(exc)
            return
        _settle(record, handled=False)

    def flush_now(self) -> None:
        """Hand the open batch over without waiting for its window (a drain)."""
        self._flush()


def _settle(record: PendingRecord, *, handled: bool) -> None:
    if not record.settled.done():
        record.settled.set_result(handled)
