"""The gateway's per-message shortcuts give exactly what the slow way gave.

* `EventFactory` (the topic's part of an event built once) against
  `build_event`, field for field and in the same order;
* `unique_id` (UUID-4-shaped ids without a syscall each): well formed,
  distinct, and not repeated by a forked child;
* a handler call failed by its expiry before a worker took it never runs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import uuid
from typing import Any

import pytest

from v2c.contract.errors import InvalidTopic
from v2c.contract.events import build_event
from v2c.gateway.event import EventFactory, LambdaContext, unique_id
from v2c.gateway.workers import HandlerPool, expire

TOPIC = "v2c/v1/eu-west-1/VIN-1HGBH41JXMN109186/telemetry/vehicle"
OTA_TOPIC = "v2c/v1/us-east-1/VIN-5YJ3E1EA7KF317000/ota/status"


@pytest.mark.parametrize(
    ("rule", "topic", "payload", "qos", "properties", "received"),
    [
        ("telemetry", TOPIC, b"\x00\xffbinary\n", 1, {}, 1_700_000_000_123),
        ("ota_status", OTA_TOPIC, b"", 2, {"dup": True, "content_type": "x"}, 1),
        ("bench", TOPIC, bytes(range(256)) * 4, 0, {"user_properties": [["k", "v"]]}, 0),
    ],
)
def test_a_factory_event_is_build_event_field_for_field_in_order(
    rule: str, topic: str, payload: bytes, qos: int, properties: dict[str, Any], received: int
) -> None:
    factory = EventFactory(rule, topic)
    factory(b"an earlier message", 0, {"dup": True}, 5)  # nothing carries over
    made = factory(payload, qos, properties, received)
    expected = build_event(
        rule=rule,
        topic=topic,
        payload=payload,
        qos=qos,
        properties=properties,
        received_at_ms=received,
    )
    assert list(made.items()) == list(expected.items())


def test_a_topic_outside_the_scheme_is_refused_as_build_event_refuses_it() -> None:
    with pytest.raises(InvalidTopic):
        EventFactory("telemetry", "v2c/v1/eu-west-1/not-a-vin/telemetry/vehicle")


def test_unique_ids_are_distinct_version_4_uuids() -> None:
    ids = [unique_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in (ids[0], ids[-1], LambdaContext("f", 1.0).aws_request_id):
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def _child_ids(out: Any) -> None:
    out.put([unique_id() for _ in range(100)])


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_child_ids, args=(out,))
    child.start()
    from_child = out.get(timeout=30)
    child.join(30)
    from_parent = [unique_id() for _ in range(100)]
    assert not set(from_child) & set(from_parent)


def test_a_call_expired_before_a_worker_took_it_never_runs() -> None:
    ran: list[str] = []
    release = threading.Event()

    def blocker() -> None:
        release.wait(30)
        ran.append("blocker")

    def queued() -> None:
        ran.append("queued")

    async def scenario() -> tuple[bool, bool]:
        pool = HandlerPool(1, name="test-expiry")
        try:
            first = pool.submit(blocker)
            second = pool.submit(queued)  # waits behind `first` on the one worker
            expire(second)
            with pytest.raises(TimeoutError):
                await second
            abandoned = pool.abandon(second)  # never started: nothing to replace
            release.set()
            await first
            marker = pool.submit(lambda: ran.append("after"))
            await marker  # the worker went past `second` to this one
            return abandoned, first.done()
        finally:
            pool.shutdown()

    abandoned, first_done = asyncio.run(scenario())
    assert (abandoned, first_done) == (False, True)
    assert ran == ["blocker", "after"]
