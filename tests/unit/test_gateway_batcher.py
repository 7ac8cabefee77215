"""The gateway's queue emulation: batches, partial-batch responses, retries, dead letters.

The handlers here are plain functions on the real worker pool; no broker. Verdicts
are on what the handler saw and how each record settled, never on elapsed time."""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any

import pytest

from v2c.contract.errors import BatchItemFailed, HandlerTimeout, TransientError
from v2c.contract.events import build_event
from v2c.contract.queue_event import failed_item_ids, is_sqs_event, record_event
from v2c.gateway.batcher import PendingRecord, RuleBatcher
from v2c.gateway.rules import EventSource, Rule
from v2c.gateway.workers import HandlerPool

TOPIC = "v2c/v1/eu-west-1/VIN-1HGBH41JXMN109186/telemetry/vehicle"


def _rule(**overrides: Any) -> Rule:
    settings: dict[str, Any] = {
        "name": "telemetry",
        "topic_filter": "v2c/v1/+/+/telemetry/vehicle",
        "handler": "unused:lambda_handler",
        "dlq": "telemetry",
        "source": EventSource.SQS,
        "queue": "v2c-telemetry-ingest",
        "batch_size": 100,
        "batch_window_ms": 20,
        "max_receive_count": 3,
        **overrides,
    }
    return Rule(**settings)


def _event(text: str) -> dict[str, Any]:
    return build_event(rule="telemetry", topic=TOPIC, payload=text.encode(), qos=1, properties={})


class Recorder:
    """A batch handler that records what it was given and fails what it is told to."""

    def __init__(self, fail: set[str] | None = None, raise_on: set[str] | None = None) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.fail = fail or set()  # payloads reported in batchItemFailures
        self.raise_on = raise_on or set()  # payloads that make the whole call raise
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert is_sqs_event(event)
        with self.lock:
            self.calls.append(event["Records"])
        texts = {r["messageId"]: _text(r) for r in event["Records"]}
        if self.raise_on & set(texts.values()):
            raise RuntimeError("poison record")
        return {
            "batchItemFailures": [
                {"itemIdentifier": mid} for mid, text in texts.items() if text in self.fail
            ]
        }


def _text(record: dict[str, Any]) -> str:
    return base64.b64decode(record_event(record["body"])["payload"]).decode()


class DeadLetters:
    def __init__(self, broken: bool = False) -> None:
        self.records: list[tuple[str, Exception, int]] = []
        self.broken = broken

    async def __call__(self, record: PendingRecord, error: Exception) -> None:
        if self.broken:
            raise TransientError("DLQ down")
        text = base64.b64decode(record.message.event["payload"]).decode()
        self.records.append((text, error, record.message.receive_count))


async def _run(rule: Rule, handler: Any, dlq: DeadLetters, texts: list[str]) -> list[bool]:
    pool = HandlerPool(4)
    batcher = RuleBatcher(rule, handler, pool, dlq)
    try:
        return list(
            await asyncio.gather(*(batcher.submit(_event(t), 1_700_000_000_000) for t in texts))
        )
    finally:
        pool.shutdown()


def test_messages_within_the_window_make_one_batch_in_the_sqs_shape() -> None:
    handler, dlq = Recorder(), DeadLetters()
    settled = asyncio.run(_run(_rule(), handler, dlq, [f"m{i}" for i in range(5)]))
    assert settled == [True] * 5
    assert len(handler.calls) == 1
    records = handler.calls[0]
    assert [_text(r) for r in records] == [f"m{i}" for i in range(5)]
    first = records[0]
    assert first["eventSource"] == "aws:sqs"
    assert first["eventSourceARN"].endswith(":v2c-telemetry-ingest")
    assert first["attributes"]["ApproximateReceiveCount"] == "1"
    assert len({r["messageId"] for r in records}) == 5
    assert dlq.records == []


def test_a_full_batch_goes_without_waiting_for_the_window() -> None:
    handler = Recorder()
    rule = _rule(batch_size=3, batch_window_ms=60_000)  # the window would never end the test
    settled = asyncio.run(_run(rule, handler, DeadLetters(), [f"m{i}" for i in range(6)]))
    assert settled == [True] * 6
    assert [len(c) for c in handler.calls] == [3, 3]


def test_a_failed_item_comes_back_alone_and_its_neighbours_are_done() -> None:
    handler, dlq = Recorder(fail={"bad"}), DeadLetters()
    settled = asyncio.run(_run(_rule(), handler, dlq, ["a", "bad", "c"]))
    assert settled == [True, False, True]
    # delivered 3 times in all (max_receive_count), then dead-lettered once
    deliveries = [[_text(r) for r in call] for call in handler.calls]
    assert deliveries[0] == ["a", "bad", "c"]
    assert deliveries[1:] == [["bad"], ["bad"]]
    receive_counts = [
        call[0]["attributes"]["ApproximateReceiveCount"] for call in handler.calls[1:]
    ]
    assert receive_counts == ["2", "3"]
    assert len(dlq.records) == 1
    text, error, attempts = dlq.records[0]
    assert (text, attempts) == ("bad", 3)
    assert isinstance(error, BatchItemFailed)
    assert error.reason == "batch_item_failure"


def test_a_poison_record_that_fails_the_whole_call_takes_nobody_with_it() -> None:
    handler, dlq = Recorder(raise_on={"poison"}), DeadLetters()
    settled = asyncio.run(_run(_rule(), handler, dlq, ["a", "poison", "c"]))
    assert settled == [True, False, True]
    assert [(t, a) for t, _e, a in dlq.records] == [("poison", 3)]
    assert isinstance(dlq.records[0][1], RuntimeError)  # the last error, as it was raised


def test_a_call_past_its_timeout_dead_letters_its_records_as_handler_timeout() -> None:
    release = threading.Event()

    def stuck(event: dict[str, Any], context: Any) -> dict[str, Any]:
        release.wait(30)
        return {"batchItemFailures": []}

    dlq = DeadLetters()
    try:
        settled = asyncio.run(_run(_rule(timeout_s=0.05), stuck, dlq, ["a", "b"]))
    finally:
        release.set()
    assert settled == [False, False]
    assert sorted(t for t, _e, _a in dlq.records) == ["a", "b"]
    assert all(isinstance(e, HandlerTimeout) for _t, e, _a in dlq.records)


def test_when_even_the_dead_letter_write_fails_the_message_is_not_settled_as_done() -> None:
    with pytest.raises(TransientError, match="DLQ down"):
        asyncio.run(
            _run(_rule(max_receive_count=1), Recorder(fail={"x"}), DeadLetters(True), ["x"])
        )


def test_a_malformed_answer_counts_as_a_failure_of_the_whole_batch() -> None:
    for answer in ("ok", {"batchItemFailures": "x"}, {"batchItemFailures": [{}]}):
        with pytest.raises(Exception, match="batch"):
            failed_item_ids(answer)
    assert failed_item_ids(None) == set()
    assert failed_item_ids({"batchItemFailures": [{"itemIdentifier": "m1"}]}) == {"m1"}


def test_messages_admitted_in_one_turn_of_the_loop_go_in_one_batch_when_others_wait() -> None:
    """With messages waiting for slots (`hurry`), a batch does not wait out its
    window, but still takes every record admitted in the same turn of the loop:
    freed slots admit a crowd at once, and a batch per record would undo batching."""
    handler = Recorder()

    async def run() -> list[bool]:
        pool = HandlerPool(4)
        rule = _rule(batch_window_ms=60_000)  # only the hurry can end these batches
        batcher = RuleBatcher(rule, handler, pool, DeadLetters(), hurry=lambda: True)
        try:
            first = [batcher.submit(_event(f"a{i}"), 0) for i in range(5)]
            done = await asyncio.gather(*first)
            second = [batcher.submit(_event(f"b{i}"), 0) for i in range(3)]
            return [*done, *await asyncio.gather(*second)]
        finally:
            pool.shutdown()

    assert asyncio.run(run()) == [True] * 8
    assert [len(call) for call in handler.calls] == [5, 3]


def test_while_max_concurrency_batches_run_the_next_one_keeps_filling() -> None:
    """`max_concurrency` (the mapping's MaximumConcurrency): with both calls
    held in the handler, records that arrive meanwhile are not made into
    small batches of their own window each; they wait in one batch that
    goes when a call ends (Lambda keeps them in the queue the same way)."""
    release = threading.Event()
    entered = threading.Semaphore(0)
    calls: list[list[str]] = []
    lock = threading.Lock()

    def held(event: dict[str, Any], context: Any) -> dict[str, Any]:
        with lock:
            calls.append([_text(r) for r in event["Records"]])
        entered.release()
        release.wait(30)
        return {"batchItemFailures": []}

    async def run() -> list[bool]:
        pool = HandlerPool(8)
        rule = _rule(batch_size=2, batch_window_ms=1, max_concurrency=2)
        batcher = RuleBatcher(rule, held, pool, DeadLetters())
        try:
            first = [asyncio.ensure_future(batcher.submit(_event(f"a{i}"), 0)) for i in range(4)]
            for _ in range(2):  # both allowed calls are in the handler
                await asyncio.to_thread(entered.acquire)
            later = [asyncio.ensure_future(batcher.submit(_event(f"b{i}"), 0)) for i in range(5)]
            for _ in range(3):  # windows run out while every call is busy
                await asyncio.sleep(0.005)
            with lock:
                assert len(calls) == 2  # nothing started beyond the limit
            release.set()
            return [*await asyncio.gather(*first), *await asyncio.gather(*later)]
        finally:
            release.set()
            pool.shutdown()

    assert asyncio.run(run()) == [True] * 9
    assert calls[:2] == [["a0", "a1"], ["a2", "a3"]]
    # b0..b4 went in full batches of 2 and the rest, never more than 2 at once
    assert sorted(t for call in calls[2:] for t in call) == [f"b{i}" for i in range(5)]
    assert [len(c) for c in calls[2:]] == [2, 2, 1]


def test_max_concurrency_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        _rule(max_concurrency=1)
