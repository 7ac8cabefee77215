"""The one lazy per-container pattern of the handlers' wiring."""

from __future__ import annotations

import threading
import time

from v2c.handlers.per_container import PerContainer


class Service:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_concurrent_first_uses_build_once() -> None:
    built: list[Service] = []

    def build() -> Service:
        time.sleep(0.01)  # wide enough for every thread to arrive
        built.append(Service("env"))
        return built[-1]

    container = PerContainer(build, close=Service.close)
    got: list[Service] = []
    threads = [threading.Thread(target=lambda: got.append(container.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert all(service is built[0] for service in got)


def test_an_installed_value_replaces_and_closes_the_built_one() -> None:
    container = PerContainer(lambda: Service("env"), close=Service.close)
    built = container.get()
    installed = Service("test")
    container.install(installed)
    assert built.closed
    assert container.get() is installed
    container.install(installed)  # the same value again is not closed
    assert not installed.closed
    container.install(None)
    assert installed.closed
    assert container.get().name == "env"


def test_a_builder_is_used_on_next_use_until_it_is_removed() -> None:
    container = PerContainer(lambda: Service("env"), close=Service.close)
    first = container.get()
    container.build_with(lambda: Service("local"))
    assert first.closed
    local = container.get()
    assert local.name == "local"
    container.build_with(None)
    assert local.closed
    assert container.get().name == "env"
