"""The Prometheus alert rules and their promtool unit tests, shipped as package
data (the wheel holds every file under `infra/v2c`), so a deployment that
runs Prometheus loads the rules the tests checked: `RULES_PATH` wherever v2c
is installed. Runbooks: docs/observability.md, "Alerts"; their CloudWatch
counterparts: `v2c.infra.aws.template_alarms`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
RULES_PATH: Final = HERE / "v2c.rules.yml"
RULES_TEST_PATH: Final = HERE / "v2c.rules.test.yml"
