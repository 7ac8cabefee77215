"""`v2c dlq`: look at, replay and purge the dead-letter queues of a stack.

A thin shell over `DeadLetterService` (the `dlq_admin` Lambda is the other
one), wired to the stack's stores: the S3 telemetry DLQ, the SQS OTA DLQ and
the ingest DLQ (`--queue ingest`: what SQS moved out of the rules' ingest
queues after their receives ran out; locally the gateway dead-letters into
the other two itself, so it is usually empty). Replay sends inbound records
through the rules table's handlers in this process, as the gateway would call
them, outbound records through an MQTT publisher that is only started when
an outbound record is replayed, so replaying telemetry never needs the
broker, and ingest records back onto the ingest queue they came from.

Everything a record holds came from outside (a vehicle's topic and payload, an
exception's text), so it is printed as plain text with control characters
escaped, never as rich markup, and payloads only as hex and base64.

Exit codes (as every `v2c` command, `v2c.infra.cli.errors`): 0 done; 1 a
replay failed, AWS or the broker failed, or the user declined; 2 bad options
(a bad duration, an unknown queue); 3 an unknown id; 4 no stack.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import InvalidInput, V2CError
from v2c.handlers.dlq.service import DeadLetterService, Redrive, ReplayStatus
from v2c.handlers.dlq.timespec import cutoff_ms
from v2c.infra.cli.errors import exit_code_for
from v2c.infra.cli.output import AsJson, Format, Output, Wide, dump, wants_json
from v2c.infra.cli.tables import Column, Kind, fitted_table

if TYPE_CHECKING:
    from v2c.gateway.publisher import OutboundPublisher
    from v2c.infra.settings import StackSettings

app = typer.Typer(
    name="dlq",
    help="Dead-letter queues: list, show, replay and purge failed messages.",
    no_args_is_help=True,
)

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)

DEFAULT_RULES = "v2c.gateway.rules:RULES"
PREVIEW_BYTES = 256  # hex dump
BASE64_PREVIEW_BYTES = 3 * 1024  # base64 (4 KiB of text); --json shows everything
_STATUS_STYLE = {
    ReplayStatus.REPLAYED: "green",
    ReplayStatus.FAILED: "bold red",
    ReplayStatus.WOULD_REPLAY: "yellow",
}


class QueueName(StrEnum):
    TELEMETRY = "telemetry"
    OTA = "ota"
    INGEST = "ingest"


StackOption = Annotated[
    Path | None,
    typer.Option(
        "--stack",
        "--stack-dir",
        help="Stack directory (holds stack.json); or V2C_STACK_DIR, else ./.stack.",
        show_default=False,
    ),
]
QueueOption = Annotated[QueueName | None, typer.Option(help="One queue only (default: all).")]


@contextmanager
def _reported() -> Iterator[None]:
    """Errors as one line on stderr and an exit code, never a traceback."""
    try:
        yield
    except V2CError as error:  # the codes of every `v2c` command (`cli_errors`)
        _err.print(Text.assemble(("error: ", "bold red"), _safe(error.detail)))
        raise typer.Exit(code=exit_code_for(error)) from error
    except (BotoCoreError, ClientError) as error:
        _err.print(Text.assemble(("error: AWS: ", "bold red"), _safe(str(error))))
        raise typer.Exit(code=exit_code_for(error)) from error


def _settings(stack: Path | None) -> StackSettings:
    from v2c.infra.settings import load_settings

    return load_settings(stack_dir=stack)


def _service(settings: StackSettings, redrivers: dict[Direction, Redrive]) -> DeadLetterService:
    from v2c.infra.local.wiring import dead_letter_stores

    return DeadLetterService(dead_letter_stores(settings), redrivers)


def _queue(queue: QueueName | None) -> str | None:
    return None if queue is None else queue.value


def _safe(text: str) -> str:
    """Control characters (terminal escape sequences) shown as escapes."""
    return "".join(c if c.isprintable() or c == "\n" else f"\\x{ord(c):02x}" for c in text)


def _when(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@app.command("list")
def list_records(
    queue: QueueOption = None,
    since: Annotated[
        str | None, typer.Option(help="Only failures since: a duration (2h, 7d) or ISO date.")
    ] = None,
    reason: Annotated[
        str | None, typer.Option(help="Only this reason, e.g. handler_error.")
    ] = None,
    stack: StackOption = None,
    output: Output = Format.TABLE,
    wide: Wide = False,
    as_json: AsJson = False,
) -> None:
    """List dead-letter records, oldest first (`-o json`: `{"items": [...], "count": N}`)."""
    import time

    with _reported():
        since_ms = None if since is None else cutoff_ms(since, time.time())
        service = _service(_settings(stack), {})
        # Oldest first across queues too: one timeline of what went wrong.
        records = sorted(
            service.records(_queue(queue), since_ms=since_ms, reason=reason),
            key=lambda r: (r.last_failed_at, r.record_id),
        )
        if wants_json(output, as_json):
            # One document, as the API's list (`GET /dlq/{queue}`) answers, with
            # every field (payload too): `jq` reads it, and an empty queue is
            # `"items": []`, not an empty stdout that no JSON parser accepts.
            items = [record.to_json() for record in records]
            dump({"items": items, "count": len(items), "truncated": False})
            return
        # The id is what `show` and `replay --id` take: never wrap or cut it.
        columns = [
            Column("id", Kind.ID),
            Column("queue", Kind.FIXED, drop=2),
            Column("when", Kind.FIXED, drop=1),
            Column("source", drop=4),
            Column("topic", drop=3),  # a topic folded into a narrow column reads badly
            Column("reason", Kind.FIXED),
            Column("tries", Kind.FIXED, drop=5, justify="right"),
            Column("size", Kind.FIXED, drop=6, justify="right"),
        ]
        rows = [
            tuple(
                Text(_safe(value))
                for value in (
                    record.record_id,
                    record.queue,
                    _when(record.last_failed_at),
                    record.source,
                    record.topic,
                    record.reason,
                    str(record.attempts),
                    str(len(record.payload)),
                )
            )
            for record in records
        ]
        count = len(rows)
    if count:
        _out.print(fitted_table(columns, rows, title="dead-letter records", wide=wide))
    _out.print(f"{count} record{'s' if count != 1 else ''}")


def hex_preview(payload: bytes, limit: int = PREVIEW_BYTES) -> str:
    """`offset  hex bytes  |ascii|` lines (printable ASCII only, others as '.')."""
    lines = []
    for offset in range(0, min(len(payload), limit), 16):
        chunk = payload[offset : offset + 16]
        ascii_ = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  |{ascii_}|")
    if len(payload) > limit:
        lines.append(f"... {len(payload) - limit} more bytes")
    return "\n".join(lines) or "(empty)"


@app.command("show")
def show(
    record_id: Annotated[str, typer.Argument(help="The record id (from `v2c dlq list`).")],
    queue: QueueOption = None,
    stack: StackOption = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Every field of one record; the payload as hex and base64, never as text."""
    with _reported():
        record = _service(_settings(stack), {}).show(record_id, _queue(queue))
    if wants_json(output, as_json):
        typer.echo(record.dumps())
        return
    table = Table(show_header=False, title=f"record {record.record_id}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    payload = record.payload
    shown = base64.b64encode(payload[:BASE64_PREVIEW_BYTES]).decode("ascii")
    rows = [
        ("queue", record.queue),
        ("direction", record.direction.value),
        ("source", record.source),
        ("topic", record.topic),
        ("vehicle", record.vehicle_id or "-"),
        ("reason", record.reason),
        ("error", record.error),
        ("attempts", str(record.attempts)),
        ("first failed", _when(record.first_failed_at)),
        ("last failed", _when(record.last_failed_at)),
        ("properties", json.dumps(record.properties, indent=1, sort_keys=True)),
        ("context", json.dumps(record.context, indent=1, sort_keys=True)),
        ("payload size", f"{len(payload)} bytes"),
        ("payload sha256", hashlib.sha256(payload).hexdigest()),
        ("payload hex", hex_preview(payload)),
        ("payload base64", shown + (" ..." if len(payload) > BASE64_PREVIEW_BYTES else "")),
    ]
    for name, value in rows:
        table.add_row(name, Text(_safe(value)))
    _out.print(table)


class OutboundOnDemand:
    """The outbound redrive path, connected at the first outbound record: a
    telemetry-only replay never touches the broker."""

    def __init__(self, settings: StackSettings) -> None:
        self._settings = settings
        self._publisher: OutboundPublisher | None = None

    def __call__(self, record: DeadLetterRecord) -> None:
        from v2c.gateway.redrive import OutboundRedriver

        if self._publisher is None:
            from v2c.gateway.publisher import OutboundPublisher
            from v2c.infra.local.wiring import service_endpoint

            client_id = f"v2c-dlq-replay-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            publisher = OutboundPublisher(service_endpoint(self._settings), client_id, None)
            publisher.start()
            self._publisher = publisher
        OutboundRedriver(self._publisher)(record)

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None


def _inbound(rules: str) -> Redrive:
    from v2c.gateway.redrive import InboundRedriver
    from v2c.gateway.rules import load_rules

    try:
        return InboundRedriver(load_rules(rules))
    except (ImportError, AttributeError, TypeError, InvalidInput) as exc:
        raise typer.BadParameter(
            f"cannot load rules {rules!r}: {exc}", param_hint="--rules"
        ) from exc


@app.command("replay")
def replay(
    queue: QueueOption = None,
    record_id: Annotated[str | None, typer.Option("--id", help="Replay this record.")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every record.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Only say what would be replayed.")] = False,
    rules: Annotated[
        str, typer.Option(help="Rules table (module:ATTR) for inbound records.")
    ] = DEFAULT_RULES,
    stack: StackOption = None,
    output: Output = Format.TABLE,
) -> None:
    """Send records back through the path they failed on; delete each one that succeeds."""
    if (record_id is None) == (not replay_all):
        raise typer.BadParameter("give exactly one of --id ID or --all")
    inbound = _inbound(rules)
    with _reported():
        settings = _settings(stack)
        outbound = OutboundOnDemand(settings)
        service = _service(settings, {Direction.INBOUND: inbound, Direction.OUTBOUND: outbound})
        try:
            outcomes = service.replay(
                queue=_queue(queue), record_id=record_id, replay_all=replay_all, dry_run=dry_run
            )
        finally:
            outbound.close()
    failed = sum(1 for o in outcomes if o.status is ReplayStatus.FAILED)
    if wants_json(output):
        dump([
            {"record_id": o.record_id, "queue": o.queue, "source": o.source,
             "status": o.status.value, "detail": o.detail}
            for o in outcomes
        ])  # fmt: skip
        raise typer.Exit(code=1 if failed else 0)
    if not outcomes:
        _out.print("nothing to replay")
        return
    table = Table(title="replay" + (" (dry run)" if dry_run else ""), title_justify="left")
    for column in ("id", "queue", "source", "result", "detail"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        cells = (outcome.record_id, outcome.queue, outcome.source)
        status = Text(outcome.status.value, _STATUS_STYLE[outcome.status])
        table.add_row(*(Text(_safe(c)) for c in cells), status, Text(_safe(outcome.detail)))
    _out.print(table)
    counts = {status: 0 for status in ReplayStatus}
    for outcome in outcomes:
        counts[outcome.status] += 1
    shown = [ReplayStatus.WOULD_REPLAY] if dry_run else [ReplayStatus.REPLAYED, ReplayStatus.FAILED]
    _out.print(", ".join(f"{counts[s]} {s.value.replace('_', ' ')}" for s in shown))
    if counts[ReplayStatus.FAILED]:
        raise typer.Exit(code=1)


@app.command("purge")
def purge(
    older_than: Annotated[
        str, typer.Option(help="Delete records that last failed before: 7d, 12h, an ISO date.")
    ],
    queue: QueueOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    stack: StackOption = None,
    output: Output = Format.TABLE,
) -> None:
    """Delete old records for good (after fixing their cause, or giving up on them)."""
    import time

    with _reported():
        cutoff = cutoff_ms(older_than, time.time())
        service = _service(_settings(stack), {})
        doomed = sum(1 for r in service.records(_queue(queue)) if r.last_failed_at < cutoff)
    where = f"the {queue.value} queue" if queue is not None else "all queues"
    if doomed == 0:
        if wants_json(output):
            dump({"purged": 0, "before": _when(cutoff)})
        else:
            _out.print(f"no records in {where} last failed before {_when(cutoff)}")
        return
    if not yes:
        typer.confirm(
            f"Delete {doomed} record(s) from {where} last failed before {_when(cutoff)}?",
            abort=True,
            err=True,  # stdout is the answer alone (`-o json | jq`), never the question
        )
    with _reported():
        removed = service.purge(cutoff, _queue(queue))
    if wants_json(output):
        dump({"purged": removed, "before": _when(cutoff)})
        return
    _out.print(f"purged {removed} record{'s' if removed != 1 else ''} from {where}")
