"""Run a Lambda function from the built artifact in an interpreter of its own.

What a warm Lambda container is, on one machine: a Python process whose
import path holds the artifact (`v2c aws build`) and nothing else, started
with the environment the template gives the function, importing the handler
once and then answering invocations one at a time. It shows what the unit
and gateway tests cannot: that the artifact alone is enough to run (no
module from the development tree or the venv leaks in: `-I -S` drops the
site directories and every `PYTHON*` variable), that the template's
environment is all the function needs, and that the handler answers the
event shapes AWS sends.

The protocol is one JSON line per invocation on the child's stdin, one
JSON line per answer on a private copy of its stdout; the handler's own
stdout (Powertools writes its JSON log lines there, as in Lambda, where
stdout goes to CloudWatch) is sent to the function's log file instead. A
call that outlives the function's `Timeout` is answered as Lambda answers
it ("Task timed out") and the process is replaced, as Lambda replaces a
timed-out container.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

from v2c.contract.errors import ConfigurationError, TransientError
from v2c.infra.local.processes import stop_child

READY: Final = "ready"
# The child: artifact first and only on sys.path, stdout kept for answers.
_BOOT: Final = r"""
import importlib, json, os, sys, time, traceback
root, handler, name, memory, timeout_s = sys.argv[1:6]
sys.path[:0] = [root]
answers = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = open(1, "w", buffering=1, closefd=False)
sys.stderr = open(2, "w", buffering=1, closefd=False)
class Context:
    function_name = name
    function_version = "$LATEST"
    memory_limit_in_mb = int(memory)
    log_group_name = "/aws/lambda/" + name
    log_stream_name = "emulated"
    def __init__(self, request_id, arn, deadline_ms):
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self._deadline_ms = deadline_ms
    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))
try:
    module, function = handler.rsplit(".", 1)
    target = getattr(importlib.import_module(module), function)
    ready = {"ready": True, "path": sys.path}
except BaseException as exc:
    ready = {"ready": False, "errorType": type(exc).__name__, "errorMessage": str(exc),
             "stackTrace": traceback.format_exc().splitlines()}
answers.write(json.dumps(ready) + "\n")
if not ready["ready"]:
    sys.exit(1)
for line in sys.stdin:
    request = json.loads(line)
    context = Context(request["request_id"], request["arn"],
                      int(time.time() * 1000) + int(timeout_s) * 1000)
    try:
        answer = {"result": target(request["event"], context)}
    except Exception as exc:
        answer = {"errorType": type(exc).__name__, "errorMessage": str(exc),
                  "stackTrace": traceback.format_exc().splitlines()}
    answers.write(json.dumps(answer, default=str) + "\n")
"""


class FunctionError(TransientError):
    """The function raised, timed out or could not start: what Lambda reports
    as a function error (`errorType`, `errorMessage`)."""

    reason = "function_error"

    def __init__(self, function: str, error_type: str, message: str) -> None:
        super().__init__(f"{function}: {error_type}: {message}")
        self.function = function
        self.error_type = error_type
        self.error_message = message


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """What the runtime needs of one function (from `template_functions`)."""

    name: str
    handler: str
    timeout_s: int
    memory_mb: int
    environment: dict[str, str]
    region: str
    account: str

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.name}"


def isolated_environment(config: FunctionConfig, endpoint_url: str) -> dict[str, str]:
    """The child's whole environment: the template's variables and what the
    Lambda runtime sets, pointed at the emulated account. Nothing of the
    caller's environment is inherited (a test's AWS variables must not help)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "AWS_REGION": config.region,
        "AWS_DEFAULT_REGION": config.region,
        "AWS_ACCESS_KEY_ID": "emulated",
        "AWS_SECRET_ACCESS_KEY": "emulated",
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "_HANDLER": config.handler,
    }
    clash = sorted(set(env) & set(config.environment) - {"AWS_ENDPOINT_URL"})
    if clash:
        raise ConfigurationError(f"{config.name}: the template sets reserved variables {clash}")
    env.update(config.environment)
    return env


class FunctionProcess:
    """One warm container of one function."""

    def __init__(
        self, config: FunctionConfig, artifact: Path, endpoint_url: str, log_file: Path
    ) -> None:
        self.config = config
        self.artifact = artifact
        self.endpoint_url = endpoint_url
        self.log_file = log_file
        self.sys_path: list[str] = []
        self.starts = 0
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def start(self) -> Self:
        self.stop()  # a replaced container's pipes and log handle go first
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Self:
        self._log = self.log_file.open("a")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _BOOT,
                str(self.artifact),
                self.config.handler,
                self.config.name,
                str(self.config.memory_mb),
                str(self.config.timeout_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=self.artifact,
            env=isolated_environment(self.config, self.endpoint_url),
            text=True,
        )
        self._proc = proc
        self.starts += 1
        ready = self._read(proc, timeout_s=60.0)
        if not ready.get("ready"):
            raise FunctionError(
                self.config.name,
                str(ready.get("errorType", "Runtime.ImportModuleError")),
                str(ready.get("errorMessage", "the handler did not load")),
            )
        self.sys_path = list(ready["path"])
        return self

    def invoke(self, event: Any) -> Any:
        """The handler's answer to `event`; `FunctionError` as Lambda reports one."""
        if self._proc is None or self._proc.poll() is not None:
            self.start()
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        request = {"event": event, "request_id": str(uuid.uuid4()), "arn": self.config.arn}
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        try:
            answer = self._read(proc, timeout_s=float(self.config.timeout_s))
        except FunctionError:
            self.stop()  # a timed-out container is not reused
            raise
        if "errorType" in answer:
            raise FunctionError(
                self.config.name, str(answer["errorType"]), str(answer["errorMessage"])
            )
        return answer["result"]

    def _read(self, proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FunctionError(
                        self.config.name,
                        "Sandbox.Timedout",
                        f"Task timed out after {timeout_s:.0f} seconds",
                    )
                if selector.select(timeout=left):
                    line = proc.stdout.readline()
                    if not line:
                        raise FunctionError(
                            self.config.name,
                            "Runtime.ExitError",
                            f"the process exited with {proc.wait()}; see {self.log_file}",
                        )
                    answer: dict[str, Any] = json.loads(line)
                    return answer

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            stop_child(proc, timeout=5.0)
            if proc.stdout is not None:
                proc.stdout.close()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def interpreter_sees_only(sys_path: list[str], artifact: Path) -> list[str]:
    """The entries of a child's `sys.path` other than the artifact and the
    interpreter's own standard library: empty when the artifact is alone."""
    stdlib = {Path(p).resolve() for p in (sys.base_prefix, sys.base_exec_prefix)}
    foreign = []
    for entry in sys_path:
        where = Path(entry).resolve() if entry else Path.cwd()
        if where == artifact.resolve():
            continue
        if (
            any(where.is_relative_to(root) for root in stdlib)
            and "site-packages" not in where.parts
        ):
            continue
        foreign.append(entry)
    return foreign
