"""Lambda function `ota_api`: the fleet-manager API behind API Gateway (REST, proxy integration).

Thin on purpose: the routes are `v2c.handlers.api`, the resolver is built
once per container from the environment (`v2c.handlers.api.config`, which
lists the variables), and a deployment too broken to build one still answers
a JSON 500 in the API's shape. The local HTTP adapter calls this same entry point.
"""

from __future__ import annotations

from typing import Any

from v2c.handlers.api.config import resolve
from v2c.handlers.emf_counts import per_invocation


@per_invocation  # one EMF line per service for the invocation's counts
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return resolve(event, context)
