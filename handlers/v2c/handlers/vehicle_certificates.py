"""Lambda function `vehicle_certificates`: certificate rotation over MQTT, and the expiry pass.

Thin on purpose: `v2c.handlers.vehicles.rotation_service.RotationService`
checks a vehicle's CSR from `.../certificate/renew`, issues its new
certificate, records it (the old one overlapping until revoked) and answers
on `.../certificate/issued`; on its schedule it revokes rotated-out
certificates whose overlap ended and sets the expiry gauges.
`v2c.handlers.vehicles.rotation_lambda` tells the invocations apart.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.emf_counts import per_invocation
from v2c.handlers.vehicles.rotation_lambda import SERVICE, handle

logger = Logger(service="v2c-vehicle-certificates")


@logger.inject_lambda_context
@per_invocation  # one EMF line per service for the invocation's counts
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(SERVICE.get(), event, context)
