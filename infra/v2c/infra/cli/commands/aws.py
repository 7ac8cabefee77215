"""`v2c aws`: the AWS side of the stack from the shell.

`bootstrap` runs the same idempotent `ensure_resources` the stack and the
tests use, against moto (`--endpoint-url`, or the stack's endpoint) or, with
`--endpoint-url aws`, against the account the usual AWS credentials name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from v2c.contract.errors import V2CError
from v2c.infra.cli.errors import exit_code_for

app = typer.Typer(
    name="aws",
    help="AWS resources: DynamoDB, S3, SQS, KMS, EventBridge, Timestream (moto locally).",
    no_args_is_help=True,
)

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)

_STYLE = {"created": "green", "updated": "yellow", "exists": "dim"}


@app.command("bootstrap")
def bootstrap(
    endpoint_url: Annotated[
        str | None,
        typer.Option(help="AWS endpoint (the moto server); 'aws' for real AWS."),
    ] = None,
    region: Annotated[str | None, typer.Option(help="AWS region.")] = None,
    stack: Annotated[
        Path | None, typer.Option("--stack-dir", help="Stack directory holding stack.json.")
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option(help="Name prefix instead of the stack's names (bucket names are global)."),
    ] = None,
) -> None:
    """Create every table, bucket, queue, key, bus and database that is missing."""
    from v2c.infra.aws.resources import ensure_resources
    from v2c.infra.names import ResourceNames
    from v2c.infra.settings import load_settings

    try:
        settings = load_settings(stack, endpoint_url=endpoint_url, region=region)
        names = ResourceNames.with_prefix(prefix) if prefix else settings.resources
        report = ensure_resources(settings.aws, names)
    except V2CError as error:
        _err.print(Text.assemble(("error: ", "bold red"), error.detail))
        raise typer.Exit(code=exit_code_for(error)) from error
    except ValidationError as error:  # an invalid --prefix
        fields = ", ".join(str(e["loc"][0]) for e in error.errors())
        raise typer.BadParameter(
            f"{prefix!r} makes invalid names ({fields}); use lowercase letters, digits, '-'",
            param_hint="--prefix",
        ) from error

    where = settings.aws.endpoint_url or f"AWS {settings.aws.region}"
    table = Table(title=f"v2c resources at {where}", title_justify="left")
    for column in ("kind", "name", "action", "detail"):
        table.add_column(column)
    for item in report.items:
        table.add_row(item.kind, item.name, Text(item.action, _STYLE[item.action]), item.detail)
    _out.print(table)
    counts = {action: 0 for action in _STYLE}
    for item in report.items:
        counts[item.action] += 1
    _out.print(
        f"{counts['created']} created, {counts['updated']} updated, {counts['exists']} unchanged"
    )
