"""One function container of the Lambda emulator, over a tiny artifact of its own:
answers, errors, a timeout, a broken import, and a handler that prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from v2c.infra.local.lambda_runtime import (
    FunctionConfig,
    FunctionError,
    FunctionProcess,
    interpreter_sees_only,
)

CODE = """
import os, sys, time
def echo(event, context):
    print("a log line on stdout, as Powertools writes them")
    return {"event": event, "name": context.function_name,
            "left": context.get_remaining_time_in_millis(), "table": os.environ["TABLE"]}
def fail(event, context):
    raise ValueError("bad input")
def slow(event, context):
    time.sleep(60)
"""


def _process(tmp_path: Path, handler: str, timeout_s: int = 5) -> FunctionProcess:
    artifact = tmp_path / "artifact"
    artifact.mkdir(exist_ok=True)
    (artifact / "fn.py").write_text(CODE)
    config = FunctionConfig(
        name="Fn",
        handler=handler,
        timeout_s=timeout_s,
        memory_mb=128,
        environment={"TABLE": "t"},
        region="eu-west-1",
        account="123456789012",
    )
    return FunctionProcess(config, artifact, "http://127.0.0.1:1", tmp_path / "fn.log")


def test_a_handler_answers_with_its_context_and_environment(tmp_path: Path) -> None:
    with _process(tmp_path, "fn.echo") as fn:
        answer = fn.invoke({"n": 1})
        assert answer["event"] == {"n": 1}
        assert (answer["name"], answer["table"]) == ("Fn", "t")
        assert 0 < answer["left"] <= 5000
        assert fn.invoke({"n": 2})["event"] == {"n": 2}  # warm: the same process
        assert fn.starts == 1
        assert interpreter_sees_only(fn.sys_path, tmp_path / "artifact") == []
    assert "a log line on stdout" in (tmp_path / "fn.log").read_text()


def test_an_exception_is_a_function_error_and_the_container_stays(tmp_path: Path) -> None:
    with _process(tmp_path, "fn.fail") as fn:
        with pytest.raises(FunctionError) as raised:
            fn.invoke({})
        assert (raised.value.error_type, raised.value.error_message) == ("ValueError", "bad input")
        with pytest.raises(FunctionError):
            fn.invoke({})
        assert fn.starts == 1


def test_a_timeout_replaces_the_container(tmp_path: Path) -> None:
    with _process(tmp_path, "fn.slow", timeout_s=1) as fn:
        with pytest.raises(FunctionError) as raised:
            fn.invoke({})
        assert raised.value.error_type == "Sandbox.Timedout"
        assert fn.pid is None  # killed, as Lambda drops a timed-out container


def test_a_handler_that_does_not_import_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(FunctionError) as raised:
        _process(tmp_path, "missing_module.handler").start()
    assert raised.value.error_type == "ModuleNotFoundError"
