"""Fixtures shared by the unit tests.

`h`: the update agent's harness (`ota_agent_harness.Harness`), one per
test. Every report the agent emitted during the test must be one the cloud's
own state machine accepts: the check runs at teardown, so no agent test can
forget it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ota_agent_harness import Harness


@pytest.fixture
def h() -> Iterator[Harness]:
    from ota_agent_harness import Harness

    harness = Harness()
    yield harness
    assert harness.cloud_refusals == []
