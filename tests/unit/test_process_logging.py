"""The stack's processes log one JSON object per line, Powertools' keys, no SDK chatter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from v2c.infra.local.process_logging import configure_process_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    quiet = {name: logging.getLogger(name).level for name in ("botocore", "urllib3")}
    out = io.StringIO()
    configure_process_logging("v2c-test", stream=out)
    yield out
    root.handlers[:], root.level = saved
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_the_service_and_the_logger_name(
    stream: io.StringIO,
) -> None:
    logging.getLogger("v2c.api").info("API serving %s", "http://127.0.0.1:1", extra={"port": 1})
    (record,) = lines(stream)
    assert record["message"] == "API serving http://127.0.0.1:1"
    assert (record["level"], record["service"], record["logger"]) == ("INFO", "v2c-test", "v2c.api")
    assert record["port"] == 1


def test_an_exception_stays_on_one_line_with_its_trace_as_data(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad report")
    except ValueError:
        logging.getLogger("v2c.gateway").exception("handler failed")
    (record,) = lines(stream)
    assert record["exception_name"] == "ValueError"
    assert "bad report" in str(record["exception"])


def test_the_aws_sdk_info_chatter_is_held_back_but_its_warnings_pass(stream: io.StringIO) -> None:
    logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
    logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
    logging.getLogger("botocore.retryhandler").warning("Retry needed")
    assert [r["message"] for r in lines(stream)] == ["Retry needed"]


def test_the_handler_writes_to_the_stderr_of_the_moment_not_of_its_making(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command run in-process (`CliRunner`) configures logging on a stand-in
    stderr that is closed afterwards: later records must not fail on it."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_process_logging("v2c-sim")
    first.close()
    later = io.StringIO()
    monkeypatch.setattr("sys.stderr", later)
    try:
        logging.getLogger("v2c.gateway").warning("gateway started")
    finally:
        root.handlers[:], root.level = saved
    assert json.loads(later.getvalue())["message"] == "gateway started"
