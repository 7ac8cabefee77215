"""What every command that calls the fleet-manager API takes: its options and its client.

`v2c campaign`, `v2c device`, `v2c stats` and `v2c firmware` reach the API the
same way (a stack directory, or an explicit URL and key, and a role whose
credential to use), so they share the option declarations and the one place
that opens and closes the client. An API error ends the command in the root
group (`v2c.infra.cli.errors`: one line, the documented exit code); a command
may add a hint for a status it knows more about (`hints`), with the same code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from v2c.infra.cli.api_client import DEFAULT_ROLE, ApiClient, ApiError, resolve_target
from v2c.infra.cli.errors import exit_code_for, message_for, print_error
from v2c.infra.cli.output import AsJson as AsJson
from v2c.infra.cli.output import Format as Format
from v2c.infra.cli.output import Output as Output
from v2c.infra.cli.output import Wide as Wide

# `--stack` is the stack directory's flag on every command (`v2c stack` and
# `v2c aws bootstrap` accept it beside their own `--dir`/`--stack-dir`).
Stack = Annotated[
    Path | None,
    typer.Option(
        "--stack",
        help="Stack directory (holds stack.json); or V2C_STACK_DIR, else ./.stack.",
        show_default=False,
    ),
]
ApiUrl = Annotated[str | None, typer.Option("--api-url", help="API base URL; or V2C_API_URL.")]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", help="API key; or V2C_API_KEY.", show_default=False),
]
AsRole = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Use the stack's credential of this role: viewer, fleet_manager, approver, "
        "operator (default fleet_manager; or set V2C_API_ROLE).",
        show_default=False,
    ),
]


@contextmanager
def api_client(
    stack: Path | None,
    url: str | None,
    key: str | None,
    role: str | None = None,
    *,
    default_role: str = DEFAULT_ROLE,
    hints: Mapping[int, str] | None = None,
) -> Iterator[ApiClient]:
    """A client for the resolved target, closed on the way out, whatever happens."""
    client = ApiClient(resolve_target(url, key, stack, role, default_role=default_role))
    try:
        yield client
    except ApiError as exc:
        hint = (hints or {}).get(exc.status)
        if hint is None:
            raise
        print_error(f"{message_for(exc)} ({hint})")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        client.close()
