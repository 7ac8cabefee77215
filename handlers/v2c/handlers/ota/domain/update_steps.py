"""Pre- and post-update steps as a campaign or device update asks for them (BR-OTA-027).

The cloud checks the actions against the vocabulary the vehicles share
(`v2c.contract.update_steps`) when the campaign is created, so a fleet manager
learns of a typo from a 400 naming the step, not from every vehicle refusing
the signed manifest. The steps are written into that manifest
(`OTAManifest.pre_update_steps` / `post_update_steps`), inside the signature.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, field_validator

from v2c.contract.update_steps import ALLOWED_ACTIONS, ARGUMENT_PATTERN, MAX_STEPS
from v2c.handlers.ota.domain.validation import rule_error, shown
from v2c.v1.ota_pb2 import UpdateStep


class StepSpec(BaseModel):
    """One step: `{"action": "stop_service", "argument": "navigation"}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: str
    argument: str = ""

    @field_validator("action")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ALLOWED_ACTIONS:
            known = ", ".join(sorted(ALLOWED_ACTIONS))
            raise rule_error(f"unknown action {shown(value)}: expected one of {known}")
        return value

    @field_validator("argument")
    @classmethod
    def _plain(cls, value: str) -> str:
        if not ARGUMENT_PATTERN.fullmatch(value):
            raise rule_error(
                "must be a name of at most 128 letters, digits and _.:@- (a service or a key)"
            )
        return value

    def to_proto(self) -> UpdateStep:
        return UpdateStep(action=self.action, argument=self.argument)


def check_steps(value: tuple[StepSpec, ...]) -> tuple[StepSpec, ...]:
    if len(value) > MAX_STEPS:
        raise rule_error(f"at most {MAX_STEPS} steps, got {len(value)}")
    return value


def to_proto(steps: Iterable[StepSpec]) -> list[UpdateStep]:
    return [step.to_proto() for step in steps]
