"""`GET /health` (liveness, public) and `GET /health/detailed` (dependencies, authenticated).

`/health` touches nothing: it answers 200 while the process can answer at
all (PRD: under 20 ms at p99), so a load balancer never takes the API out
of service because a dependency is slow. `/health/detailed` runs every
injected check (`ApiServices.health_checks`) concurrently, each in its own
daemon thread bounded by `health_timeout_s`: one hung dependency costs at
most the timeout, and cannot hold a worker a later request would need.
Any check failing or timing out makes the answer 503 with each component's
status, as the PRD lists 503 for "database or storage unavailable".
A failure is reported by its kind (a v2c reason, an AWS error code, an
exception class), never by its message, which may name internals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import BaseModel, Field

from v2c.contract.errors import V2CError
from v2c.handlers.api.app import OtaApi
from v2c.handlers.api.services import SERVICE_NAME, ApiServices, HealthCheck


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    service: str
    version: str


class ComponentHealth(BaseModel):
    status: Literal["ok", "error", "timeout"]
    latency_ms: float = Field(ge=0)
    error: str | None = Field(default=None, description="the kind of failure, when not ok")


class HealthReport(BaseModel):
    status: Literal["ok", "degraded"]
    service: str
    version: str
    components: dict[str, ComponentHealth]


def _failure_kind(error: Exception) -> str:
    if isinstance(error, V2CError):
        return error.reason
    response = getattr(error, "response", None)  # botocore ClientError, without importing it
    if isinstance(response, Mapping):
        code = (response.get("Error") or {}).get("Code")
        if code:
            return str(code)
    return type(error).__name__


def run_checks(
    checks: Mapping[str, HealthCheck],
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, ComponentHealth]:
    """Each check's outcome, all run at once and given `timeout_s` in total."""
    outcomes: dict[str, ComponentHealth] = {}

    def probe(name: str, check: HealthCheck) -> None:
        start = clock()
        error: str | None = None
        try:
            check()
        except Exception as exc:  # a probe's failure is its answer
            error = _failure_kind(exc)
        latency = max(0.0, (clock() - start) * 1000)
        outcomes[name] = ComponentHealth(
            status="ok" if error is None else "error", latency_ms=round(latency, 3), error=error
        )

    threads = [
        threading.Thread(target=probe, args=(name, check), name=f"health-{name}", daemon=True)
        for name, check in checks.items()
    ]
    started = clock()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, timeout_s - (clock() - started)))
    return {
        name: outcomes.get(name)
        or ComponentHealth(status="timeout", latency_ms=round(timeout_s * 1000, 3), error="timeout")
        for name in sorted(checks)
    }


def register(app: OtaApi, services: ApiServices) -> None:
    app.mark_public("/health")

    @app.get("/health", tags=["health"], summary="Liveness: the API answers")
    def health() -> Health:
        return Health(service=SERVICE_NAME, version=services.version)

    @app.get(
        "/health/detailed",
        tags=["health"],
        summary="Each dependency's status; 503 when any is down",
        responses={
            200: {
                "description": "Every dependency answered",
                "content": {"application/json": {"model": HealthReport}},
            },
            503: {
                "description": "A dependency failed or timed out",
                "content": {"application/json": {"model": HealthReport}},
            },
        },
    )
    def health_detailed() -> Response[HealthReport]:
        components = run_checks(services.health_checks, services.health_timeout_s)
        healthy = all(c.status == "ok" for c in components.values())
        report = HealthReport(
            status="ok" if healthy else "degraded",
            service=SERVICE_NAME,
            version=services.version,
            components=components,
        )
        return Response(200 if healthy else 503, content_types.APPLICATION_JSON, report)
