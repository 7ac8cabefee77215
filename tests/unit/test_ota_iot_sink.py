"""The IoT data plane sink's `send_many`: a bounded window of publishes at once
(the data plane has no batch publish), answers in order, and a failed
publish dead-lettered on its own. The client is a stand-in for boto3's
`iot-data` client: what is under test is the window, not AWS."""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import ClientError

from v2c.handlers.dlq.store import InMemoryDeadLetterStore
from v2c.handlers.ota.iot_sink import IotDataSink
from v2c.handlers.ota.notifier import SinkMessage

WINDOW = 4


class FakeIotData:
    """Counts publishes in flight; the first `WINDOW` wait for each other, so
    a sink that did not run them at once would never get past them."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.failing = failing
        self.topics: list[str] = []
        self.active = 0
        self.most = 0
        self._lock = threading.Lock()
        self._together = threading.Barrier(WINDOW)

    def publish(self, *, topic: str, qos: int, payload: bytes, **properties: Any) -> None:
        with self._lock:
            first = len(self.topics) < WINDOW
            self.topics.append(topic)
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            if first:
                self._together.wait(timeout=10)
            if topic in self.failing:
                raise ClientError({"Error": {"Code": "ThrottlingException"}}, "Publish")
        finally:
            with self._lock:
                self.active -= 1


def _messages(n: int) -> list[SinkMessage]:
    return [
        SinkMessage(f"v2c/v1/eu/VIN{i}/ota/available", b"m%d" % i, f"corr-{i}", {"n": str(i)})
        for i in range(n)
    ]


def test_send_many_keeps_a_bounded_window_of_publishes_in_flight() -> None:
    client = FakeIotData()
    sink = IotDataSink(client, InMemoryDeadLetterStore("ota"), window=WINDOW)

    assert sink.send_many(_messages(10)) == [True] * 10

    assert client.most == WINDOW
    assert sorted(client.topics) == sorted(m.topic for m in _messages(10))


def test_a_failed_publish_is_dead_lettered_alone_and_answered_in_place() -> None:
    failing = frozenset({"v2c/v1/eu/VIN2/ota/available", "v2c/v1/eu/VIN7/ota/available"})
    dead_letters = InMemoryDeadLetterStore("ota")
    sink = IotDataSink(FakeIotData(failing), dead_letters, window=WINDOW)

    results = sink.send_many(_messages(10))

    assert [i for i, ok in enumerate(results) if not ok] == [2, 7]
    records = list(dead_letters.list())
    assert sorted(r.topic for r in records) == sorted(failing)
    assert {r.context["qos"] for r in records} == {1}
