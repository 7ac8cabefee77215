"""The rotation function as a local gateway hosts it: the stack's CA issues, the broker answers.

In AWS `v2c.handlers.vehicle_certificates` builds its service from the
environment (AWS IoT Core issues, the IoT data plane answers). Locally the
gateway process hosts it, so its composition root (`v2c gateway run`)
installs a service over the stack's fleet CA and broker
(`vehicle_issuer.stack_issuer`: the CRL on revocation, the broker told to
read it again) and a publisher of its own on the service listener (QoS 2
with retries, then the OTA DLQ, as OTA notifications go), before any
handler runs. The registry is the stack's moto table.

The function's schedule too: AWS invokes it every hour with
`{"v2c": "certificate_expiry"}` (`template.yaml`, `ExpiryPass`); locally the
gateway, which hosts the function and serves the default Prometheus registry
its expiry gauges live in, runs `ExpirySchedule` in a thread: the same handler,
the same input, a Lambda-like context, once at start and then every hour.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from v2c.infra.settings import StackSettings

if TYPE_CHECKING:
    from v2c.handlers.vehicles.rotation_service import RotationService

log = logging.getLogger("v2c.certificates")

# The function as `template.yaml` deploys it: name, timeout, `rate(1 hour)`.
FUNCTION_NAME: Final = "v2c-vehicle_certificates"
FUNCTION_TIMEOUT_S: Final = 30.0
EXPIRY_INTERVAL_S: Final = 3600.0
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def local_rotation_service(settings: StackSettings) -> RotationService:
    """The rotation service of a local gateway; closing it stops its publisher."""
    import boto3

    from v2c.gateway.ota_sink import MqttNotificationSink
    from v2c.gateway.publisher import OutboundPublisher
    from v2c.handlers.ota.config import OtaConfig, ota_dead_letters
    from v2c.handlers.vehicles.config import NoIssuer
    from v2c.handlers.vehicles.metrics import certificate_metrics
    from v2c.handlers.vehicles.repository import InventoryRepository
    from v2c.handlers.vehicles.rotation_lambda import overlap_ms
    from v2c.handlers.vehicles.rotation_service import RotationService
    from v2c.infra.local.vehicle_issuer import stack_issuer
    from v2c.infra.local.wiring import service_endpoint

    config = OtaConfig.from_env()
    client_id = f"v2c-certs-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    publisher = OutboundPublisher(
        service_endpoint(settings), client_id, ota_dead_letters(config, boto3.Session())
    )
    publisher.start()
    repository = InventoryRepository(
        settings.aws.client("dynamodb"), settings.resources.vehicle_registry_table
    )
    return RotationService(
        repository,
        stack_issuer(settings) or NoIssuer(),
        MqttNotificationSink(publisher),
        metrics=certificate_metrics(),
        overlap_ms=overlap_ms(os.environ),
        on_close=publisher.stop,
    )


def use_local_rotation_service(settings: StackSettings) -> None:
    """Make this process's rotation function build `local_rotation_service` on first use."""
    from v2c.handlers.vehicles.rotation_lambda import SERVICE

    SERVICE.build_with(lambda: local_rotation_service(settings))


class ExpirySchedule:
    """The rotation function's expiry pass, invoked as its AWS schedule invokes it.

    `run(wait)` makes a pass at once (a stack that was down for a while
    revokes what is overdue without waiting an hour), then one each time
    `wait(interval_s)` returns False: a `threading.Event.wait`, so setting the
    event ends the loop. A failing pass is logged once per distinct error and
    never ends the loop; the next pass tries again, as the next scheduled
    invocation would in AWS.
    """

    def __init__(
        self, handler: Handler | None = None, *, interval_s: float = EXPIRY_INTERVAL_S
    ) -> None:
        self._handler = handler
        self.interval_s = interval_s
        self.passes = 0
        self.failed_passes = 0  # consecutive
        self._failing: str | None = None

    def run(self, wait: Callable[[float], bool]) -> None:
        self.run_pass()
        while not wait(self.interval_s):
            self.run_pass()

    def run_pass(self) -> dict[str, Any] | None:
        """One pass; its summary, or None when it failed."""
        from v2c.gateway.event import LambdaContext
        from v2c.handlers.vehicles.rotation_lambda import EXPIRY_EVENT

        handler = self._handler or _expiry_handler()
        context = LambdaContext(
            function_name=FUNCTION_NAME, timeout_s=FUNCTION_TIMEOUT_S, log_stream_name="gateway"
        )
        self.passes += 1
        try:
            summary = handler({"v2c": EXPIRY_EVENT}, context)
        except Exception as exc:  # the next pass tries again
            self.failed_passes += 1
            error = f"{type(exc).__name__}: {exc}"
            if error != self._failing:
                self._failing = error
                log.error("certificate expiry pass failed: %s", error, exc_info=True)
            return None
        if self._failing is not None:
            log.warning("certificate expiry passes work again after %d failed", self.failed_passes)
        self._failing, self.failed_passes = None, 0
        log.info("certificate expiry pass: %s", summary)
        return summary


def _expiry_handler() -> Handler:
    from v2c.handlers.vehicle_certificates import lambda_handler

    return lambda_handler
