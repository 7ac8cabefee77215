"""CloudWatch counts from the recording functions, as EMF lines, in Lambda only.

The recording functions of `ota.metrics`, `signing.metrics` and
`vehicles.metrics` count into Prometheus wherever they run (the gateway and
the API process serve it locally); in AWS Lambda nobody scrapes a function,
so the same call also writes one EMF line that CloudWatch turns into metrics
(namespace `v2c`, one dimension: `service`), which the template's alarms read.
As in `telemetry.emf`: nothing is emitted unless `AWS_LAMBDA_FUNCTION_NAME`
is set (a gateway hosting the handlers would flood stdout), and an
`EphemeralMetrics` per call, never the shared singleton, because the
handlers run on many threads at once.

Counts are summed per invocation (`per_invocation`, the Lambda entry points'
decorator) and written as one line per service when it returns: a campaign
cancel moves thousands of updates, each counted where it happens, and one
line each would be thousands of log lines for one number. Gauges (levels of
one moment) are written at once.
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from v2c.handlers.telemetry.emf import NAMESPACE, in_lambda

__all__ = ["NAMESPACE", "emit_counts", "emit_gauges", "per_invocation"]

P = ParamSpec("P")
R = TypeVar("R")
_SUMS = threading.local()  # this thread's invocation: service -> metric -> count


def per_invocation(handler: Callable[P, R]) -> Callable[P, R]:
    """The counts `handler` makes, one EMF line per service when it returns
    (or raises: what was done was done)."""

    @functools.wraps(handler)
    def counted(*args: P.args, **kwargs: P.kwargs) -> R:
        if getattr(_SUMS, "counts", None) is not None or not in_lambda():
            return handler(*args, **kwargs)
        _SUMS.counts = defaultdict(lambda: defaultdict(float))
        try:
            return handler(*args, **kwargs)
        finally:
            sums, _SUMS.counts = _SUMS.counts, None
            for service, counts in sums.items():
                emit_counts(service, counts)

    return counted


def emit_counts(service: str, counts: Mapping[str, float]) -> None:
    """One EMF line with each non-zero count (a no-op outside Lambda), or,
    inside a `per_invocation` handler, added to its sums."""
    sums = getattr(_SUMS, "counts", None)
    if sums is not None:
        for name, value in counts.items():
            sums[service][name] += value
        return
    _emit(service, {name: value for name, value in counts.items() if value})


def emit_gauges(service: str, levels: Mapping[str, float]) -> None:
    """One EMF line with the levels of one moment, zeros included (an alarm
    needs to see a level fall, and one over their difference reads both
    from the same line)."""
    _emit(service, levels)


def _emit(service: str, values: Mapping[str, float]) -> None:
    if not values or not in_lambda():
        return
    metrics = EphemeralMetrics(namespace=NAMESPACE, service=service)
    for name, value in sorted(values.items()):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.flush_metrics()
