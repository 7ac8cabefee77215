"""Pre- and post-update steps (BR-OTA-027): which actions a manifest may name.

A signed manifest may ask the vehicle to do a few things around the
installation (stop a service before the slot is written, restart it after
the commit). It names *actions*, never code: the agent knows a fixed
allow-list, and a manifest naming anything else is refused before anything
is downloaded (REJECTED PRE_UPDATE_STEP_FAILED), because the vehicle could
not honour what the cloud signed. The runtime executes an allowed action
(`effects.RunUpdateStep`) and says whether it worked.

What a failure means differs by side of the commit: a failed pre-update step
ends the update before the slot is touched (FAILED PRE_UPDATE_STEP_FAILED:
INSTALLING was reported, so the cloud's machine needs FAILED, not REJECTED);
a failed post-update step cannot undo a committed, verified slot, so it is
reported in the COMPLETED report's `error_detail` and the update stands.
"""

from __future__ import annotations

from collections.abc import Sequence

from v2c.contract.update_steps import ALLOWED_ACTIONS, MAX_ARGUMENT_CHARS, MAX_STEPS
from v2c.v1.ota_pb2 import OTAManifest, UpdateStep
from v2c.vehicle_sim.ota.agent.effects import StepStage

__all__ = ["ALLOWED_ACTIONS", "MAX_ARGUMENT_CHARS", "MAX_STEPS", "describe", "refusal", "steps_of"]


def steps_of(manifest: OTAManifest, stage: StepStage) -> Sequence[UpdateStep]:
    return manifest.pre_update_steps if stage is StepStage.PRE else manifest.post_update_steps


def describe(stage: StepStage, index: int, steps: Sequence[UpdateStep]) -> str:
    """How a report names a step: `pre-update step 2/3 clear_cache(nav)`."""
    step = steps[index]
    argument = step.argument[:MAX_ARGUMENT_CHARS]
    return f"{stage.value}-update step {index + 1}/{len(steps)} {step.action}({argument})"


def refusal(manifest: OTAManifest) -> str:
    """Why the agent cannot run the manifest's steps ("" when it can)."""
    for stage in StepStage:
        steps = steps_of(manifest, stage)
        if len(steps) > MAX_STEPS:
            return f"{len(steps)} {stage.value}-update steps; at most {MAX_STEPS}"
        for index, step in enumerate(steps):
            if step.action not in ALLOWED_ACTIONS:
                return f"{describe(stage, index, steps)}: unknown action"
    return ""
