"""A real moto server for integration tests, reached over HTTP like real AWS.

One server per pytest-xdist worker (session scope: each worker is its own
process), started in ~0.3 s; `aws_stack` resets it and bootstraps every
resource before each test (~0.2 s), so no state leaks between tests. Tests
in one worker run one at a time, so the reset never pulls resources from
under another test.

Registered once, for every test, in `tests/conftest.py`. `stack_dir` writes
a stack.json over the test's `mosquitto` and this moto, for what reads one
(the `v2c` commands, `dead_letter_stores`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from v2c.infra.aws.resources import ResourceReport, ensure_resources
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.moto_server import MotoServer, reset
from v2c.infra.names import ResourceNames
from v2c.infra.settings import AwsSettings, MqttSettings, StackSettings, write_settings


@dataclass(frozen=True)
class AwsStack:
    """What a test gets from `aws_stack`: where moto is and what exists there."""

    aws: AwsSettings
    names: ResourceNames
    report: ResourceReport

    def settings(self) -> StackSettings:
        """A stack description without a broker, for code that takes one."""
        return StackSettings(aws=self.aws, resources=self.names)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of this worker's moto server (its stderr: moto.log)."""
    log_file = tmp_path_factory.mktemp("moto") / "moto.log"
    with MotoServer(log_file=log_file) as server:
        yield server.endpoint_url


@pytest.fixture
def aws_settings(moto_server: str) -> AwsSettings:
    """Settings pointing boto3 at the moto server (state as the last test left it)."""
    return AwsSettings(endpoint_url=moto_server)


@pytest.fixture
def aws_stack(moto_server: str, aws_settings: AwsSettings) -> AwsStack:
    """An empty moto with every v2c resource bootstrapped under the default names."""
    reset(moto_server)
    names = ResourceNames()
    return AwsStack(aws_settings, names, ensure_resources(aws_settings, names))


@pytest.fixture
def stack_dir(tmp_path: Path, mosquitto: MosquittoBroker, aws_stack: AwsStack) -> Path:
    """A stack directory over this test's `mosquitto` and moto, as the CLI commands read one."""
    settings = StackSettings(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
        aws=aws_stack.aws,
        resources=aws_stack.names,
    )
    write_settings(settings, tmp_path / "stack")
    return tmp_path / "stack"
