"""A real mosquitto per test, and the OTA stack the vehicle and fleet tests share.

A broker is spawned on a free loopback port in the test's tmp_path. Starting
one takes a few tens of milliseconds, so every test gets its own broker and
no state leaks between tests or pytest-xdist workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig

if TYPE_CHECKING:
    from fleet_support import LoopThread
    from moto_fixtures import AwsStack

    from v2c.handlers.ota.config import OtaServices
    from v2c.infra.settings import StackSettings

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


# -- the OTA stack of the vehicle and fleet tests --------------------------------
# One broker, one moto-backed stack description, the OTA services over them and
# an event loop for the vehicles: the setup every vehicle/OTA test over a real
# stack starts from. A module that needs another shape (a broker with other
# limits, the gateway's own services) defines its own fixture of the same name.


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(MosquittoConfig(data_dir=tmp_path / "broker")) as running:
        yield running


@pytest.fixture
def stack(aws_stack: AwsStack, broker: MosquittoBroker) -> StackSettings:
    from v2c.infra.settings import MqttSettings, StackSettings

    return StackSettings(
        mqtt=MqttSettings(host=broker.host, port=broker.port),
        aws=aws_stack.aws,
        resources=aws_stack.names,
    )


@pytest.fixture
def cloud(stack: StackSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtaServices]:
    from fleet_support import ota_cloud

    with ota_cloud(stack, monkeypatch) as services:
        yield services


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    from fleet_support import loop_thread

    with loop_thread() as runner:
        yield runner
