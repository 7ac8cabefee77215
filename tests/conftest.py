"""Fixtures shared by every test folder.

Missing system tools fail the run instead of skipping it: a green run without
mosquitto or protoc would prove nothing, and scripts/setup.sh installs both.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from v2c.infra.local.broker import BrokerNotInstalled, find_mosquitto


@pytest.fixture(scope="session")
def mosquitto_executable() -> Path:
    """The mosquitto 2.x binary the integration tests spawn."""
    try:
        return find_mosquitto()
    except BrokerNotInstalled as exc:
        pytest.fail(f"{exc.detail}", pytrace=False)


@pytest.fixture(scope="session")
def stock_protoc() -> Path:
    """The OS's own protoc (not grpcio-tools'): proof the contract builds with any compiler."""
    found = Path("/usr/bin/protoc") if Path("/usr/bin/protoc").exists() else None
    if found is None and (on_path := shutil.which("protoc")) is not None:
        found = Path(on_path)
    if found is None:
        pytest.fail(
            "protoc (Debian package protobuf-compiler) is not installed: run scripts/setup.sh",
            pytrace=False,
        )
    return found
