"""A real moto server for integration tests, reached over HTTP like real AWS.

One server per pytest-xdist worker (session scope: each worker is its own
process), started in ~0.3 s; `aws_stack` resets it and bootstraps every
resource before each test (~0.2 s), so no state leaks between tests. Tests
in one worker run one at a time, so the reset never pulls resources from
under another test.

Make the fixtures visible with one line in `tests/integration/conftest.py`:

    from moto_fixtures import aws_settings, aws_stack, moto_server  # noqa: F401

or, in a single test module, `pytest_plugins = ["moto_fixtures"]`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from v2c.infra.aws.resources import ResourceReport, ensure_resources
from v2c.infra.local.moto_server import MotoServer, reset
from v2c.infra.names import ResourceNames
from v2c.infra.settings import AwsSettings, StackSettings


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
