"""The `v2c` exit codes and error lines, as `v2c.infra.cli.errors` and docs/cli.md document them."""

from __future__ import annotations

import re
from pathlib import Path

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
from v2c.handlers.ota.domain.lifecycle import ACTIVE, CampaignStatus
from v2c.infra.cli import errors
from v2c.infra.cli.api_client import ApiError
from v2c.infra.cli.campaign_watch import OUTCOME_CODES, outcome_code
from v2c.infra.cli.errors import exit_code_for, message_for, one_line
from v2c.infra.settings import StackNotFound

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


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
        (ConfigurationError("the stack has no fleet_manager credential"), 3),
        (StackNotFound("no stack description at /x/stack.json"), 4),
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


def documented_codes() -> dict[int, str]:
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", DOCS.read_text(), re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def test_docs_cli_md_lists_every_code_the_cli_uses_and_no_other() -> None:
    used = {
        value
        for name, value in vars(errors).items()
        if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
    }
    assert set(documented_codes()) == used
    assert documented_codes()[4].startswith("no stack")
    assert "paused" in documented_codes()[errors.WATCH_PAUSED]


def test_every_final_campaign_status_ends_a_watch_with_a_distinct_code() -> None:
    final = frozenset(CampaignStatus) - ACTIVE
    assert final <= OUTCOME_CODES.keys()
    assert OUTCOME_CODES[CampaignStatus.COMPLETED] == 0
    others = [code for status, code in OUTCOME_CODES.items() if status != "completed"]
    assert len(set(others)) == len(others)
    assert 0 not in others
    assert outcome_code("paused") == 10  # not final, but nothing moves until someone acts
    assert outcome_code("in_progress") is None
    assert outcome_code("rolling_back") is None
    assert outcome_code("a-status-from-a-newer-api") is None
