"""The tools' errors: the local stack, the broker, the benchmarks, the API client.

They derive from `V2CError` so the CLI reports every failure one way (its
`reason`, an exit code), but they live here, not in the wire contract
(`v2c.contract.errors`): no vehicle and no handler ever sees one. Each
module that raises one re-exports it under its old name.
"""

from __future__ import annotations

from v2c.contract.errors import TransientError, V2CError


class BrokerError(V2CError):
    """The local broker could not be found, started or stopped."""

    reason = "broker_error"


class StackError(TransientError):
    """A component of the local stack did not start or stopped on its own."""

    reason = "stack_error"


class BenchError(V2CError):
    """A bench could not run to the end (a process failed, a phase timed out)."""

    reason = "bench_failed"


class ApiError(V2CError):
    """The API refused a request; `status` is its HTTP status."""

    reason = "api_error"

    def __init__(self, status: int, detail: str, reason: str = "api_error") -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.api_reason = reason


class ArtifactError(V2CError):
    """The Lambda artifact could not be built: a runtime dependency is not
    installed (or not at a version the project allows), or pip failed."""

    reason = "artifact_failed"
