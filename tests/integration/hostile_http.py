"""Helpers of the hostile-HTTP tests: a signing gate, a campaign body, raw HTTP over a socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SigningGate:
    """Holds every signature until `release()`: a campaign creation that takes
    as long as the test wants, with no clock involved."""

    closed: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    opened: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed = True
        self.opened.clear()

    def release(self) -> None:
        self.opened.set()

    def wait(self) -> None:
        if self.closed:
            self.entered.set()
            assert self.opened.wait(120), "the test never released the signing gate"


def campaign_spec(firmware_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "spring",
        "firmware_id": firmware_id,
        "target_filter": "model = 'Accord'",
        "deployment_strategy": "immediate",
        **extra,
    }


# -- raw HTTP over a socket: what a hostile client sends ------------------------


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_connect(port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> socket.socket:
    """A connection whose reads give up after `timeout` (a hang guard, not a measure)."""
    return socket.create_connection((host, port), timeout=timeout)


def head(method: str, target: str, headers: Mapping[str, str], *, host: str = "127.0.0.1") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_answer(sock: socket.socket) -> RawAnswer:
    """One HTTP answer (with Content-Length), read from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data[:200]!r}")
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawAnswer(int(status_line.split()[1]), headers, rest[:length])


def assert_error_shape(answer: RawAnswer, status: int, reason: str | None = None) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) >= {"detail", "reason"}, body
    assert body["detail"], body
    if reason is not None:
        assert body["reason"] == reason, body
