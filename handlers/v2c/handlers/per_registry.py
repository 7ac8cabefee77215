"""One set of metrics per Prometheus registry, registered on first use.

A registry refuses a second metric of the same name, and the same recording
functions count into the default registry in a process and into a private one
in a test: so each metrics module keeps its set per registry. Weakly keyed (a
test's registry goes with the test) and under a lock (the gateway calls the
handlers from many threads, and two first uses must not register twice).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry

T = TypeVar("T")


class PerRegistry(Generic[T]):
    def __init__(self, make: Callable[[CollectorRegistry], T]) -> None:
        self._make = make
        self._made: WeakKeyDictionary[CollectorRegistry, T] = WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, registry: CollectorRegistry) -> T:
        """The registry's one set, made and registered on first use."""
        with self._lock:
            made = self._made.get(registry)
            if made is None:
                made = self._made[registry] = self._make(registry)
            return made
