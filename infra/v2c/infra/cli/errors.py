"""How every `v2c` command ends when something goes wrong: one line on stderr, an exit code.

No command prints a traceback for an API error, a usage error or a failed
dependency. The root command group (`V2CGroup`, used by `v2c.infra.cli.main`)
runs every command without Click's standalone handling and maps what comes
out of it; commands that print their own error line use `exit_code_for`,
so the codes are the same everywhere:

====  ==================================================================
code  meaning
====  ==================================================================
0     done (`campaign watch`: the campaign completed)
1     failed: the API answered 5xx or could not be reached, a component
      or dependency failed (moto, the broker, AWS), or the outcome the
      command checks did not hold (a demo campaign off its gate rules,
      a benchmark or self-test that failed); retrying may help
2     usage: the command line is wrong (unknown option, missing or
      out-of-range value, a value that is not valid such as a bad VIN,
      a version that is not SemVer or an unreadable file); `--help` says how
3     refused: the API answered 4xx (400 invalid, 401/403 credentials or
      role, 404 not found, 409 conflict with the current state, 413,
      422), or what the command needs is in the wrong state (no CA, a
      stack already running, a stack.json that cannot be read or is
      invalid)
4     no stack: no stack description where `--stack`, `V2C_STACK_DIR`
      or `./.stack` point (and no `V2C_API_URL`/`V2C_API_KEY`)
10    `campaign watch`: the campaign paused (a gate or health check failed,
      or someone paused it)
11    `campaign watch`: the campaign failed (its planning failed)
12    `campaign watch`: the campaign was cancelled
13    `campaign watch`: the campaign was rolled back
14    `campaign watch`: the campaign was rejected by its approver
124   `campaign watch --timeout` ran out; the campaign goes on
130   interrupted (Ctrl-C)
====  ==================================================================

`docs/cli.md` has the same table for users; `tests/unit/test_cli_exit_codes.py`
keeps the two and this module in step.

Anything else (a bug) keeps its traceback, which is what a bug report needs.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Final, NoReturn

import requests
import typer
import typer.core
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.text import Text

from v2c.contract.errors import (
    ConfigurationError,
    Conflict,
    InvalidInput,
    NotAuthorized,
    NotFound,
    V2CError,
)
from v2c.infra.cli.api_client import ApiError
from v2c.infra.settings import StackNotFound

OK: Final = 0
FAILED: Final = 1
USAGE: Final = 2
REFUSED: Final = 3
NO_STACK: Final = 4
WATCH_PAUSED: Final = 10
WATCH_FAILED: Final = 11
WATCH_CANCELLED: Final = 12
WATCH_ROLLED_BACK: Final = 13
WATCH_REJECTED: Final = 14
TIMED_OUT: Final = 124
INTERRUPTED: Final = 130

_ERRNO: Final = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_UNREACHABLE: Final = re.compile(r"cannot reach the API at (\S+?): ")
_err = Console(stderr=True, soft_wrap=True, highlight=False)


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error that ends a command (see the module's table)."""
    if isinstance(error, ApiError):
        if 400 <= error.status < 500:
            return REFUSED
        return FAILED  # 5xx, or the API could not be reached (status 0)
    if isinstance(error, typer.TyperException):  # Click's usage errors (typer vendors Click)
        code = getattr(error, "exit_code", USAGE)
        return code if isinstance(code, int) else USAGE
    if isinstance(error, InvalidInput):
        return USAGE  # a value given on the command line (or in a file it names)
    if isinstance(error, StackNotFound):
        return NO_STACK
    if isinstance(error, NotFound | Conflict | NotAuthorized | ConfigurationError):
        return REFUSED
    return FAILED


def one_line(text: str) -> str:
    """`text` on one line, with control characters shown, not obeyed (an
    API detail can echo hostile input back)."""
    flat = " ".join(text.split())
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in flat)


def message_for(error: BaseException) -> str:
    """What the user reads: the error's own words, shortened where a library's are noise."""
    if isinstance(error, ApiError):
        detail = error.detail
        if error.status == 0:
            # requests' words for a refused connection run to 300 characters of
            # pool and object reprs; the errno text is what matters
            where = _UNREACHABLE.search(detail)
            found = _ERRNO.search(detail)
            why = found.group(1).strip().lower() if found else "no answer"
            if where is not None:
                return (
                    f"cannot reach the API at {where.group(1)} ({why}); "
                    "is the stack running? `v2c stack status` tells"
                )
        return detail
    if isinstance(error, V2CError):
        return error.detail
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"AWS {info.get('Code', 'error')}: {info.get('Message', error)}"
    if isinstance(error, BotoCoreError):
        return f"AWS: {error}"
    if isinstance(error, requests.RequestException):
        errno_text = _ERRNO.search(str(error))
        return f"HTTP: {errno_text.group(1).strip() if errno_text else error}"
    if isinstance(error, OSError):
        path = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or error}{path}"
    return str(error) or type(error).__name__


def print_error(text: str) -> None:
    _err.print(Text.assemble(("error: ", "bold red"), one_line(text)))


def fail(error: BaseException) -> NoReturn:
    """Print `error` as one line and exit with its code."""
    print_error(message_for(error))
    sys.exit(exit_code_for(error))


# What ends a command with one line instead of a traceback.
HANDLED: Final = (V2CError, BotoCoreError, ClientError, requests.RequestException, OSError)


def _usage(error: typer.TyperException) -> str:
    format_message = getattr(error, "format_message", None)
    text = str(format_message() if callable(format_message) else error)
    ctx = getattr(error, "ctx", None)
    path = getattr(ctx, "command_path", None)
    if path:
        text = f"{text.rstrip('.')}. See `{path} --help`."
    return text


class V2CGroup(typer.core.TyperGroup):
    """The root `v2c` group: runs a command, then turns what went wrong into
    one line on stderr and the exit code of the module's table. Tests that
    call the app through typer's `CliRunner` see exactly what a shell sees."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except typer.TyperException as error:  # Click's usage errors, BadParameter, ...
            if type(error).__name__ != "NoArgsIsHelpError":  # else typer printed the help
                print_error(_usage(error))
            sys.exit(exit_code_for(error))
        except typer.Abort:  # a declined confirmation, end of input
            print_error("aborted")
            sys.exit(FAILED)
        except HANDLED as error:
            fail(error)
        # Without standalone handling, `typer.Exit(code)` comes back as its code;
        # a command that returns normally returns None.
        sys.exit(result if type(result) is int else OK)
