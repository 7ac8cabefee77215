"""Loopback networking helpers for the local stack and the tests.

Tests run in parallel (pytest-xdist) and each spawns its own broker, so no
port may be fixed: every listener asks the kernel for a free one.
"""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on `host` a moment ago.

    The kernel picks it (bind to port 0); the socket is closed before the
    caller binds, so another process may take it in between. Callers that
    spawn a server on it retry with a new port when the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connection to (host, port) succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float, interval: float = 0.02) -> bool:
    """Poll until (host, port) accepts a connection; False when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(host, port):
            return True
        time.sleep(interval)
    return port_accepts(host, port)
