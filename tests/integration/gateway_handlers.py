"""Handlers and rules tables the gateway tests route to.

They record into a file named by an environment variable, because the
gateway under test may run in another process (the kill -9 tests)."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import replace
from typing import Any

from v2c.contract.topics import Domain, TopicFilter
from v2c.gateway.rules import RULES as PRODUCTION_RULES
from v2c.gateway.rules import EventSource, Rule

RECORD_ENV = "V2C_TEST_RECORD_FILE"
FAIL_FLAG_ENV = "V2C_TEST_FAIL_FLAG"


def _append(event: dict[str, Any], context: Any) -> None:
    line = json.dumps(
        {
            "rule": event["rule"],
            "region": event["region"],
            "vehicle_id": event["vehicle_id"],
            # Text for the tests that send text; base64 for those that prove bytes survive.
            "payload": base64.b64decode(event["payload"]).decode(errors="backslashreplace"),
            "payload_b64": event["payload"],
            "properties": event["properties"],
            "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "pid": os.getpid(),
            "gateway": context.log_stream_name,
        }
    )
    # One write with O_APPEND: lines from concurrent threads never interleave.
    fd = os.open(os.environ[RECORD_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def record_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    _append(event, context)
    return {"status": "ok"}


HOLD_ENV = "V2C_TEST_HOLD_PAYLOAD"
HELD_MARKER = "held"


def record_batch_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A queue-fed function (SQS records in, partial-batch response out) that
    records every message of its batch. The message named by `HOLD_ENV` is
    never finished: the call writes a marker and hangs, so a test can kill the
    gateway while a batch is in the handler."""
    held = os.environ.get(HOLD_ENV)
    inner = [json.loads(record["body"]) for record in event["Records"]]
    if held and any(base64.b64decode(e["payload"]).decode() == held for e in inner):
        _append({**inner[0], "payload": base64.b64encode(HELD_MARKER.encode()).decode()}, context)
        time.sleep(3600)
    for message in inner:
        _append(message, context)
    return {"batchItemFailures": []}


def flaky_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """Fails while the flag file exists: the 'broken, then fixed' handler."""
    flag = os.environ.get(FAIL_FLAG_ENV)
    if flag and os.path.exists(flag):
        raise RuntimeError("store unavailable (injected)")
    _append(event, context)
    return {"status": "ok"}


SLOW_HANDLER_S = 0.05


class Concurrency:
    """How many calls of a handler overlap, counted by the handler itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.active -= 1


SLOW_CALLS = Concurrency()  # meaningful when the gateway runs in the test's process


def slow_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """A store that takes 50 ms per write: what flow control must absorb."""
    with SLOW_CALLS:
        time.sleep(SLOW_HANDLER_S)
        _append(event, context)
    return {"status": "ok"}


BUSY_HANDLER_S = 0.002  # a store round trip: what a flood costs per message


def busy_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """Takes 2 ms (sleeping, as a handler waiting on its store does), then records."""
    time.sleep(BUSY_HANDLER_S)
    _append(event, context)
    return {"status": "ok"}


class Gate:
    """Holds the calls of `hang_handler` until released; counts them."""

    def __init__(self) -> None:
        self.calls = Concurrency()
        self.release = threading.Event()


HANG = Gate()  # replaced per test (monkeypatch); the gateway runs in the test's process


def hang_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """A handler stuck on a dependency that never answers, until the test lets it go."""
    gate = HANG
    with gate.calls:
        gate.release.wait(120)
    _append(event, context)  # the late completion of a call given up on
    return {"status": "late"}


class HeldVehicles:
    """Holds the calls of `held_busy_handler` for some vehicles until released."""

    def __init__(self, *vehicles: str) -> None:
        self.vehicles = frozenset(vehicles)
        self.release = threading.Event()


HELD = HeldVehicles()  # replaced per test (monkeypatch); the gateway runs in the test's process


def held_busy_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """`busy_handler`, except that a held vehicle's calls wait for the test's release:
    a flood whose every slot is taken, whatever the machine's speed."""
    held = HELD
    if event["vehicle_id"] in held.vehicles:
        held.release.wait(120)
    return busy_handler(event, context)


def read_records(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        # Only whole lines: a handler in another process may be mid-append
        # (the reader can see the first bytes of a write before the rest).
        return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]


TELEMETRY = str(TopicFilter(domain=Domain.TELEMETRY, kind="vehicle"))
OTA_STATUS = str(TopicFilter(domain=Domain.OTA, kind="status"))
TELEMETRY_BATCH = str(TopicFilter(domain=Domain.TELEMETRY, kind="batch"))

RECORDING_RULES = (
    Rule("telemetry", TELEMETRY, f"{__name__}:record_handler", dlq="telemetry", qos=1),
    Rule("ota_status", OTA_STATUS, f"{__name__}:record_handler", dlq="ota", qos=2),
    Rule("telemetry_batch", TELEMETRY_BATCH, f"{__name__}:record_handler", dlq="telemetry", qos=1),
)
FLAKY_RULES = (Rule("telemetry", TELEMETRY, f"{__name__}:flaky_handler", dlq="telemetry", qos=1),)
SLOW_RULES = (Rule("telemetry", TELEMETRY, f"{__name__}:slow_handler", dlq="telemetry", qos=1),)
BUSY_RULES = (Rule("telemetry", TELEMETRY, f"{__name__}:busy_handler", dlq="telemetry", qos=1),)
BATCH_RECORDING_RULES = (
    Rule(
        "telemetry",
        TELEMETRY,
        f"{__name__}:record_batch_handler",
        dlq="telemetry",
        qos=1,
        source=EventSource.SQS,
        queue="v2c-telemetry-ingest",
        batch_size=50,
        batch_window_ms=20,
    ),
)
HELD_RULES = (
    Rule("telemetry", TELEMETRY, f"{__name__}:held_busy_handler", dlq="telemetry", qos=1),
)

# The production rules with handler timeouts a loaded test machine cannot reach by
# slowness alone (`fleet_support.patient_rules`): for `v2c gateway run --rules`.
PATIENT_RULES = tuple(replace(rule, timeout_s=240.0) for rule in PRODUCTION_RULES)
