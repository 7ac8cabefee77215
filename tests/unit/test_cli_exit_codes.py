"""The `v2c` exit codes and error lines, as `v2c.infra.cli.errors` documents them."""

from __future__ import annotations

import pytest
import typer

from v2c.contract.errors import (
    ConfigurationError,
    Conflict,
    NotAuthorized,
    NotFound,
    TransientError,
    ValidationFailed,
)
from v2c.infra.cli.api_client import ApiError
from v2c.infra.cli.errors import exit_code_for, message_for, one_line


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ApiError(400, "bad"), 3),
        (ApiError(401, "who"), 3),
        (ApiError(403, "role"), 3),
        (ApiError(404, "gone"), 3),
        (ApiError(409, "state"), 3),
        (ApiError(422, "checksum"), 3),
        (ApiError(500, "bug"), 1),
        (ApiError(503, "down"), 1),
        (ApiError(0, "cannot reach the API at http://x: refused"), 1),
        (ValidationFailed("not a VIN"), 2),
        (typer.BadParameter("--vehicles"), 2),
        (NotFound("no CA"), 3),
        (Conflict("a stack already runs"), 3),
        (NotAuthorized("no key"), 3),
        (ConfigurationError("no stack description"), 3),
        (TransientError("moto down"), 1),
        (OSError(5, "I/O error"), 1),
    ],
)
def test_every_error_has_its_documented_exit_code(error: BaseException, code: int) -> None:
    assert exit_code_for(error) == code


def test_a_refused_connection_reads_as_one_short_sentence() -> None:
    noise = (
        "cannot reach the API at http://127.0.0.1:9: HTTPConnectionPool(host='127.0.0.1', "
        "port=9): Max retries exceeded with url: /api/v1/ota/campaigns (Caused by "
        'NewConnectionError("<urllib3.connection.HTTPConnection object at 0x7f>: Failed to '
        'establish a new connection: [Errno 111] Connection refused"))'
    )
    assert message_for(ApiError(0, noise)) == (
        "cannot reach the API at http://127.0.0.1:9 (connection refused); "
        "is the stack running? `v2c stack status` tells"
    )


def test_an_api_detail_is_printed_on_one_line_with_control_characters_shown() -> None:
    assert one_line("HTTP 400: name\n  is\x1b[31m red\x07") == "HTTP 400: name is\\x1b[31m red\\x07"
