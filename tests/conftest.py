"""Fixtures and hooks shared by every test folder.

Missing system tools fail the run instead of skipping it: a green run without
mosquitto or protoc would prove nothing, and scripts/setup.sh installs both.

The fixture plugins are registered here, once, because pytest accepts
`pytest_plugins` only in the top-level conftest, and a plugin's fixtures
reach the whole session wherever it is named: one list says what every
module can use. `pythonpath` in pyproject.toml puts `tests/integration` on
`sys.path` so that they import under the names the test modules use.

Every test under `tests/integration/` is marked `integration` by the
collection hook below, so `pytest -m integration` cannot miss a module that
forgot a hand-written mark (four once did).

Every moto server the suite starts (directly or under a stack) takes each
of its shortcuts and moto's own way too (answers, requests, updates,
queries: `v2c.infra.local.moto_*`) and fails the request if they differ:
the whole suite's workload checks the shortcuts the stack takes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from v2c.infra.local.broker import BrokerNotInstalled, find_mosquitto
from v2c.infra.local.moto_server import VERIFY_ANSWERS_ENV

os.environ.setdefault(VERIFY_ANSWERS_ENV, "1")

pytest_plugins = ["moto_fixtures", "softhsm_fixtures", "api_fixtures", "api_moto"]

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark by folder, not by memory: the folder is what `-m integration` means."""
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


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
