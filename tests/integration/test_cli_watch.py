"""`v2c campaign watch` ends with a code that says how the campaign stopped.

A fake API on loopback (a real HTTP server in this process) answers
`GET /api/v1/ota/campaigns/{id}` with a campaign that moves through a
script of statuses; the real `v2c` app polls it through `CliRunner`, as a
shell would. Each way a campaign stops has its documented code (docs/cli.md):
0 completed, 10 paused, 11 failed, 12 cancelled, 13 rolled back, 14
rejected, 124 the watch's own timeout. The live view goes to stderr and ends
with a newline, so the final table on stdout never starts mid-line.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from v2c.infra.cli.main import app

CAMPAIGN = "c0ffee" + "0" * 26


def campaign(status: str, completed: int = 0, reason: str = "") -> dict[str, Any]:
    counters = {
        "pending": 4 - completed, "in_progress": 0, "completed": completed, "failed": 0,
        "rolled_back": 0, "cancelled": 0, "timed_out": 0, "waiting": 0, "total": 4,
        "success_rate": None, "failure_rate": None, "progress_percent": completed * 25.0,
    }  # fmt: skip
    return {
        "campaign_id": CAMPAIGN,
        "name": "accord-canary",
        "status": status,
        "status_reason": reason,
        "strategy": "canary",
        "firmware_id": "f" * 32,
        "version": "2.0.0",
        "device_model": "Accord",
        "target_count": 4,
        "counters": counters,
        "waves": [
            {"name": "canary", "size": 1, "gated": True, "counters": counters},
            {"name": "rollout", "size": 3, "gated": False, "counters": counters},
        ],
        "current_wave": 0,
        "gate": {"verdict": "fail", "reason": "failures exceed 5%"} if status == "paused" else None,
    }


class FakeApi:
    """Answers each poll with the next campaign of `script`, the last one for ever."""

    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.polls = 0
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                assert self.path == f"/api/v1/ota/campaigns/{CAMPAIGN}", self.path
                answer = api.script[min(api.polls, len(api.script) - 1)]
                api.polls += 1
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def watch(api: FakeApi, *extra: str) -> Result:
    return CliRunner().invoke(
        app,
        ["campaign", "watch", CAMPAIGN, "--interval", "0.2", "--api-url", api.url,
         "--api-key", "k", *extra],
        env={"COLUMNS": "80"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("final", "code"),
    [
        ("completed", 0),
        ("paused", 10),
        ("planning_failed", 11),
        ("cancelled", 12),
        ("rolled_back", 13),
        ("rejected", 14),
    ],
)
def test_each_way_a_campaign_stops_has_its_exit_code(api: FakeApi, final: str, code: int) -> None:
    api.script = [campaign("in_progress"), campaign("in_progress", 2), campaign(final, 4)]

    result = watch(api)

    assert result.exit_code == code, result.output
    assert api.polls == 3  # it followed the campaign to the end, not the first answer
    assert result.stdout.startswith(f"campaign {CAMPAIGN}")  # the table, whole, on stdout
    assert final in result.stdout.split("status", 1)[1].splitlines()[0]  # its status row
    # the live view: bars, the wave and the gate, then a newline before anything else
    assert "completed" in result.stderr
    assert "4/4" in result.stderr
    assert "wave 1/2 canary (1 vehicles, gated)" in result.stderr
    assert result.stderr.endswith("\n")
    if code:
        assert f"campaign {final}" in result.stderr


def test_a_paused_campaign_names_its_gate_and_the_json_is_the_last_answer(api: FakeApi) -> None:
    api.script = [campaign("in_progress"), campaign("paused", 1, "canary gate failed")]

    result = watch(api, "-o", "json")

    assert result.exit_code == 10
    answer = json.loads(result.stdout)  # nothing but JSON on stdout
    assert answer["status"] == "paused"
    assert "gate: fail: failures exceed 5%" in result.stderr
    assert "canary gate failed" in result.stderr


def test_a_watch_that_runs_out_of_time_says_so_and_exits_124(api: FakeApi) -> None:
    api.script = [campaign("in_progress")]

    result = watch(api, "--timeout", "1")

    assert result.exit_code == 124
    assert "timed out after 1 s; the campaign goes on (in_progress)" in result.stderr
    assert api.polls >= 2
