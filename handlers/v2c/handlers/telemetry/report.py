"""What one invocation of a telemetry handler did.

The Lambda form turns it into EMF metrics (`emf`) and returns it as JSON; a
DLQ replay reads `errors` to decide whether the replay failed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from v2c.contract.errors import V2CError
from v2c.handlers.telemetry.model import Path


@dataclass(slots=True)
class IngestReport:
    """What one invocation did; the Lambda form turns it into EMF metrics."""

    topic: Path
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    failed: int = 0  # valid, but a write failed after its retries: dead-lettered
    dead_lettered: int = 0
    undecodable: int = 0  # a batch that could not be checked or opened (the alert's count)
    batch_id: str = ""
    compression_ratio: float | None = None
    errors: list[V2CError] = field(default_factory=list)  # for a replay's verdict

    def to_json(self) -> dict[str, Any]:
        # Not asdict(): it deep-copies the exceptions, and not every error
        # class can be rebuilt from its args.
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["topic"] = self.topic.value
        out["errors"] = [f"{e.reason}: {e.detail}" for e in self.errors]
        return out
