"""Dead-letter queues (operator only): list a queue's records, replay them.

The same `DeadLetterService` as `v2c dlq` and the `dlq_admin` function, over
HTTP, for the operator's dashboard: `GET /api/v1/dlq/{queue}` lists record
summaries (no payloads: a payload is vehicle data, and an answer is capped
at 6 MB), `POST /api/v1/dlq/{queue}/replay` sends one record (`{"record_id"}`)
or every record (`{"all": true}`, at most `limit` a call) back through the path it
failed on, deleting each one that succeeded (`dry_run`: only say what would
happen). The queues: `telemetry` (S3), `ota` (SQS) and `ingest`, what SQS
moved out of the rules' ingest queues, replayed onto the queue each came
from. Both need the `operator` role (`v2c.handlers.api.roles`). Locally `v2c
api serve` wires the stack's queues with the gateway's redrive paths; in AWS
the function gets them from the variables of `v2c.handlers.dlq.config`
(503 without).
"""

from __future__ import annotations

from itertools import islice
from typing import Annotated, Any, Final, Literal

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field

from v2c.handlers.api.app import API_PREFIX, OtaApi
from v2c.handlers.api.models import RequestModel
from v2c.handlers.api.services import ApiServices, require

DLQ_PATH: Final = f"{API_PREFIX}/dlq"
MAX_LIST: Final = 500
DEFAULT_REPLAY: Final = 100  # records a call: the function answers within 29 s
Queue = Annotated[
    str, Path(pattern="^(telemetry|ota|ingest)$", description="telemetry, ota or ingest")
]


class DeadLetterSummary(BaseModel):
    record_id: str
    queue: str
    direction: str
    source: str
    topic: str
    payload_size: int
    reason: str
    error: str
    attempts: int
    first_failed_at: int
    last_failed_at: int
    vehicle_id: str


class DeadLetterRecordOut(DeadLetterSummary):
    """One record whole: what an operator inspects before replaying it."""

    payload_b64: str = Field(description="the original payload, as it arrived (base64)")
    properties: dict[str, Any] = Field(description="its MQTT 5 properties")
    context: dict[str, Any] = Field(description="what the failing path added (e.g. indexes)")


RecordId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="the record's id, as the list names it",
    ),
]


class DeadLetterList(BaseModel):
    items: list[DeadLetterSummary]
    count: int
    truncated: bool = Field(description="more records match than `limit`")


class ReplayOne(RequestModel):
    """Replay one record."""

    record_id: str = Field(min_length=1, max_length=200)
    dry_run: bool = False


class ReplayAll(RequestModel):
    """Replay every record of the queue (`all` must be said, never implied), at
    most `limit` of them in this call."""

    all: Literal[True]
    dry_run: bool = False
    limit: int = Field(default=DEFAULT_REPLAY, ge=1, le=MAX_LIST)


class ReplayOutcomeOut(BaseModel):
    record_id: str
    queue: str
    source: str
    status: str
    detail: str


class ReplayResult(BaseModel):
    outcomes: list[ReplayOutcomeOut]
    replayed: int
    failed: int
    limit_reached: bool = Field(
        default=False, description="as many records as `limit`: more may remain, call again"
    )


def _summary(data: dict[str, Any]) -> DeadLetterSummary:
    fields = DeadLetterSummary.model_fields
    return DeadLetterSummary(**{k: v for k, v in data.items() if k in fields})


def register(app: OtaApi, services: ApiServices) -> None:
    @app.get(f"{DLQ_PATH}/<queue>", tags=["dlq"], summary="List a dead-letter queue's records")
    def list_dead_letters(
        queue: Queue,
        reason: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    ) -> DeadLetterList:
        service = require(services.dlq, "dead-letter")
        records = list(islice(service.records(queue, reason=reason), limit + 1))
        items = [_summary(r.to_json()) for r in records[:limit]]
        return DeadLetterList(items=items, count=len(items), truncated=len(records) > limit)

    @app.get(
        f"{DLQ_PATH}/<queue>/records/<record_id>",
        tags=["dlq"],
        summary="One dead-letter record whole, payload included (role operator)",
        openapi_extensions={"x-v2c-errors": [404]},
    )
    def get_dead_letter(queue: Queue, record_id: RecordId) -> DeadLetterRecordOut:
        service = require(services.dlq, "dead-letter")
        data = service.show(record_id, queue).to_json()
        fields = DeadLetterRecordOut.model_fields
        return DeadLetterRecordOut(**{k: v for k, v in data.items() if k in fields})

    @app.post(
        f"{DLQ_PATH}/<queue>/replay",
        tags=["dlq"],
        summary="Replay dead-letter records through the path they failed on",
        openapi_extensions={"x-v2c-errors": [404]},
    )
    def replay_dead_letters(queue: Queue, body: ReplayOne | ReplayAll) -> ReplayResult:
        service = require(services.dlq, "dead-letter")
        limit_reached = False
        if isinstance(body, ReplayOne):
            outcomes = service.replay(queue=queue, record_id=body.record_id, dry_run=body.dry_run)
        else:
            outcomes = service.replay(
                queue=queue, replay_all=True, dry_run=body.dry_run, limit=body.limit
            )
            limit_reached = len(outcomes) >= body.limit
        out = [
            ReplayOutcomeOut(
                record_id=o.record_id,
                queue=o.queue,
                source=o.source,
                status=o.status.value,
                detail=o.detail,
            )
            for o in outcomes
        ]
        replayed = sum(1 for o in out if o.status == "replayed")
        failed = sum(1 for o in out if o.status == "failed")
        return ReplayResult(
            outcomes=out, replayed=replayed, failed=failed, limit_reached=limit_reached
        )
