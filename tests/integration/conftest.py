"""A real mosquitto per test: spawned on a free loopback port in the test's tmp_path.

Starting one takes a few tens of milliseconds, so every test gets its own
broker and no state leaks between tests or pytest-xdist workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig

BrokerFactory = Callable[..., MosquittoBroker]


@pytest.fixture
def mosquitto_factory(tmp_path: Path, mosquitto_executable: Path) -> Iterator[BrokerFactory]:
    """Start brokers with `MosquittoConfig` overrides (tls=, acl_file=...); all stop at teardown."""
    brokers: list[MosquittoBroker] = []

    def start(**overrides: Any) -> MosquittoBroker:
        overrides.setdefault("data_dir", tmp_path / f"mosquitto-{len(brokers)}")
        overrides.setdefault("executable", mosquitto_executable)
        broker = MosquittoBroker(MosquittoConfig(**overrides))
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for broker in reversed(brokers):
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: BrokerFactory) -> MosquittoBroker:
    """A running plain-TCP mosquitto with persistence and the 128 KB packet limit."""
    return mosquitto_factory()
