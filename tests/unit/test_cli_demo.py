"""`v2c demo --keep-running` stays up until Ctrl-C or SIGTERM, and says where to log in.

The waiting is `wait_for_stop_signal`: a real SIGTERM, sent to this process
from another thread, must end it (and the handlers before it come back), so
the demo's `finally` stops the fleet and the stack instead of the default
SIGTERM killing the process with the stack's processes left behind.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from typer.testing import CliRunner

from v2c.infra.cli.commands.demo import login_lines, wait_for_stop_signal
from v2c.infra.cli.main import app
from v2c.infra.settings import ApiSettings


def test_sigterm_ends_the_wait_and_the_previous_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    sender = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    sender.start()

    received = wait_for_stop_signal(poll_s=0.05)

    sender.join()
    assert received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_demo_takes_keep_running() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "--keep-running" in result.output


def test_the_end_of_the_demo_names_the_dashboard_and_each_roles_key_file() -> None:
    api = ApiSettings(
        url="http://127.0.0.1:8080",
        key_files={"viewer": Path("/s/api-viewer.key"), "fleet_manager": Path("/s/api.key")},
    )
    lines = login_lines(api)
    assert lines[0] == "dashboard: http://127.0.0.1:8080/dashboard"
    assert "  log in as fleet_manager: the API key in /s/api.key" in lines
    assert "  log in as viewer: the API key in /s/api-viewer.key" in lines
