"""Processes of a stack seen from outside: alive or not, ours or not, stopped for good.

Also the one way a child this process spawned is stopped (`stop_child`): a
polite SIGTERM, then SIGKILL after a bound, and always reaped, so no zombie
or orphan outlives a stack, a moto server or a test.

`v2c stack status` and `v2c stack down` run in another process than the one
that started the stack, so all they have are the PIDs in stack.json. A PID
can be recycled by an unrelated process after a crash; every signal sent here
is therefore preceded by a look at `/proc/<pid>/cmdline` for a marker only
our process has (its config path, its module name, its subcommand).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a dead child we have not reaped yet)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def command_line(pid: int) -> bytes:
    """The NUL-separated argv of `pid`, or b"" when it is gone or unreadable."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def is_ours(pid: int, marker: bytes) -> bool:
    """Whether `pid` is alive and its command line contains `marker`."""
    return alive(pid) and marker in command_line(pid)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def terminate(pid: int, marker: bytes, timeout: float = 20.0) -> bool:
    """SIGTERM `pid` if it is ours, SIGKILL after `timeout`; True when it was ours (now gone)."""
    if not is_ours(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 5.0)
    return True


def stop_child(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM a child of ours, SIGKILL it after `timeout`; reaped either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
