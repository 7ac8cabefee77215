"""Every way a `v2c` command fails ends in one line on stderr and a documented exit code.

Against a real API (the HTTP adapter, the resolver and the campaign service
over moto), a server that answers 500, a port nobody listens on and a
directory without a stack: no traceback, one `error:` line, and the code of
`v2c.infra.cli.errors` (1 failed, 2 usage, 3 refused, 4 no stack). Through
typer's `CliRunner` on the real `v2c` app, which goes through the same root
group as the shell; one case also runs the installed `v2c` as a subprocess.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from api_support import API_KEY
from click.testing import Result
from ota_support import fleet
from typer.testing import CliRunner

from v2c.handlers.api import ApiServices
from v2c.handlers.ota.config import OtaServices
from v2c.infra.cli.main import app
from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.infra.net import free_port

if TYPE_CHECKING:
    pass


V2C = Path(sys.executable).parent / "v2c"
UNKNOWN = "0" * 32


@pytest.fixture
def api_services(moto_ota: OtaServices, moto_campaign_api: ApiServices) -> ApiServices:
    """The campaign routes over moto, with three Accords to target."""
    moto_ota.deps.fleet.put(fleet(3))
    return moto_campaign_api


@pytest.fixture
def target(api_server: ApiHttpServer) -> list[str]:
    return ["--api-url", api_server.base_url, "--api-key", API_KEY]


@pytest.fixture
def failing_server() -> Iterator[str]:
    """An HTTP server that answers every request 500 with the API's error shape."""

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"detail": "internal error", "reason": "internal_error"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def assert_one_error_line(result: Result, code: int, *words: str) -> str:
    """Exit `code`, no traceback, exactly one `error:` line on stderr naming `words`."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("error: "), line
    for word in words:
        assert word in line, line
    return line


def test_a_400_is_one_line_and_exit_3(target: list[str]) -> None:
    result = run(
        "campaign", "create", "--name", "bad", "--firmware", "f" * 32,
        "--filter", "model = 'Accord' AND (year >= 2023", *target,
    )  # fmt: skip
    assert_one_error_line(result, 3, "HTTP 400")


def test_a_create_without_its_required_flags_names_them_before_any_request() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens: a request would exit 1
    result = run("campaign", "create", "--api-url", url, "--api-key", "k")
    assert_one_error_line(result, 2, "missing --name and --firmware")


def test_an_api_field_error_names_the_flag_the_user_typed(
    target: list[str], registered_firmware: str
) -> None:
    result = run(
        "campaign", "create", "--name", "x", "--firmware", registered_firmware,
        "--filter", "model = 'Accord'", "--strategy", "sideways", *target,
    )  # fmt: skip
    line = assert_one_error_line(result, 3, "HTTP 400", "--strategy")
    assert "deployment_strategy" not in line, line


def test_a_404_is_one_line_and_exit_3(target: list[str]) -> None:
    assert_one_error_line(run("campaign", "show", UNKNOWN, *target), 3, "HTTP 404")


def test_a_409_is_one_line_and_exit_3(target: list[str], registered_firmware: str) -> None:
    created = run(
        "campaign", "create", "--name", "twice", "--firmware", registered_firmware,
        "--filter", "model = 'Accord'", "--strategy", "immediate", "--json", *target,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    campaign_id = json.loads(created.stdout)["campaign_id"]
    assert run("campaign", "start", campaign_id, *target).exit_code == 0
    again = run("campaign", "start", campaign_id, *target)
    assert_one_error_line(again, 3, "HTTP 409")


def test_a_bad_credential_is_one_line_and_exit_3(api_server: ApiHttpServer) -> None:
    result = run("campaign", "list", "--api-url", api_server.base_url, "--api-key", "wrong")
    assert_one_error_line(result, 3, "HTTP 401")


def test_a_5xx_is_one_line_and_exit_1(failing_server: str) -> None:
    result = run("campaign", "list", "--api-url", failing_server, "--api-key", "k")
    assert_one_error_line(result, 1, "HTTP 500", "internal error")


def test_a_refused_connection_is_one_short_line_and_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("campaign", "list", "--api-url", url, "--api-key", "k")
    line = assert_one_error_line(result, 1, "cannot reach the API", url, "connection refused")
    assert "HTTPConnectionPool" not in line
    assert len(line) < 200


def test_a_missing_stack_is_one_line_and_exit_4(tmp_path: Path) -> None:
    for args in (
        ["campaign", "list", "--stack", str(tmp_path)],
        ["firmware", "list", "--stack", str(tmp_path)],
        ["stats", "--stack", str(tmp_path)],
        ["dlq", "list", "--stack", str(tmp_path)],
    ):
        assert_one_error_line(run(*args), 4, "no stack description", str(tmp_path))


def test_the_missing_stack_hint_names_flags_and_variables_that_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.stack here
    for name in ("V2C_STACK_DIR", "V2C_API_URL", "V2C_API_KEY", "V2C_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    line = assert_one_error_line(run("campaign", "list"), 4, "--stack DIR", "V2C_STACK_DIR")
    assert "V2C_API_URL" in line
    assert "V2C_API_KEY" in line
    assert "--stack-dir" not in line  # `campaign` has no such flag


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["campaign", "show"], ["Missing argument", "v2c campaign show --help"]),
        (["campaign", "list", "--bogus"], ["No such option: --bogus"]),
        (["campaign", "list", "--limit", "0"], ["--limit"]),
        (["demo", "--vehicles", "1"], ["--vehicles"]),
        (["demo", "--faults", "no-such-profile"], ["no-such-profile"]),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], words: list[str]) -> None:
    assert_one_error_line(run(*args), 2, *words)


def test_the_installed_command_behaves_the_same_in_a_shell(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args, code in (
        (["campaign", "list", "--api-url", url, "--api-key", "k"], 1),
        (["campaign", "list", "--stack", str(tmp_path)], 4),
        (["campaign", "show"], 2),
    ):
        done = subprocess.run(
            [str(V2C), *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: "), done.stderr
