"""One value per Lambda container (per process, locally), built on first use.

A Lambda function builds its clients and services on the cold start and keeps
them for every later invocation: building them per event would cost a TLS
handshake per client and lose the telemetry dedup window. Every feature's
wiring (`telemetry.config`, `ota.config`, `api.config`, `dlq.config`) keeps its
services in a `PerContainer`, so all of them are built, replaced and reset the
same way (they used to be five hand-written globals with five locks).

Why not `functools.cache` on a `from_env()`: locally the gateway calls the
handlers from many threads at once, and a cached function may run its body
twice under a race (two telemetry services would register their Prometheus
metrics twice and fail); and a cache offers no way to put a value in.

Two ways to put one in, for tests and the local composition roots:
* `install(value)`: use this value from now on (`None`: build again on next use);
* `build_with(builder)`: build with this on first use instead of from the
  environment (`None`: from the environment again). This is how the local
  stack gives the OTA services the gateway's MQTT publisher as their
  notification sink, without the handlers importing the gateway.

A value that is replaced is closed (`close`), unless it is the new value.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerContainer(Generic[T]):
    def __init__(
        self, from_env: Callable[[], T], *, close: Callable[[T], None] | None = None
    ) -> None:
        self._from_env = from_env
        self._builder = from_env
        self._close = close
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """The container's value, built on first use (once, whatever the threads)."""
        with self._lock:
            if self._value is None:
                self._value = self._builder()
            return self._value

    def install(self, value: T | None) -> None:
        """Use `value` from now on; `None` builds again on next use."""
        with self._lock:
            previous, self._value = self._value, value
        if previous is not None and previous is not value and self._close is not None:
            self._close(previous)

    def build_with(self, builder: Callable[[], T] | None) -> None:
        """Build with `builder` on next use (`None`: from the environment), in
        place of the value held now, which is closed."""
        with self._lock:
            self._builder = builder or self._from_env
        self.install(None)
