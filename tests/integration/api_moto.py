"""The API over the production services on this test's moto (helpers: `hostile_http`).

Use with `pytest_plugins = ["api_fixtures", "moto_fixtures", "api_moto"]`. A
plugin's fixtures reach every module of the session, so nothing here
overrides another plugin's: a module serves these by overriding the
`api_fixtures` defaults itself:

    @pytest.fixture
    def api_services(moto_api_services: ApiServices) -> ApiServices:
        return moto_api_services

`moto_api_services`: campaigns, devices, stats, firmware and the DLQ over
moto, with a software signer that a test can hold (`signing_gate`);
`moto_streaming_routes`: the real streaming firmware upload;
`deployable_firmware`: a package campaigns for the `ota_support.fleet`
vehicles can deploy.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import pytest
from hostile_http import SigningGate
from ota_support import RecordingSink, fleet

from v2c.handlers.api import ApiServices
from v2c.handlers.dlq.service import DeadLetterService
from v2c.handlers.ota.config import OtaConfig, OtaServices, build_services
from v2c.handlers.ota_api import health_checks
from v2c.handlers.signing.software import SoftwareSigner
from v2c.infra.local.firmware_streaming import firmware_streaming_routes
from v2c.infra.local.http_adapter import StreamingRoute
from v2c.infra.local.wiring import dead_letter_stores, handler_environment

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

FLEET_SIZE = 12


@pytest.fixture
def signing_gate() -> SigningGate:
    return SigningGate()


@pytest.fixture
def moto_ota(
    aws_stack: AwsStack, monkeypatch: pytest.MonkeyPatch, signing_gate: SigningGate
) -> Iterator[OtaServices]:
    for name, value in handler_environment(aws_stack.settings()).items():
        monkeypatch.setenv(name, value)
    signer = SoftwareSigner.generate(key_id="k")
    sign = signer._sign

    def gated(message: bytes) -> bytes:
        signing_gate.wait()
        return sign(message)

    signer._sign = gated  # type: ignore[method-assign]
    services = build_services(OtaConfig.from_env(), sink=RecordingSink(), signer=signer)
    yield services
    services.close()


@pytest.fixture
def moto_api_services(moto_ota: OtaServices, aws_stack: AwsStack) -> ApiServices:
    return ApiServices(
        health_checks=health_checks(dict(os.environ)),
        campaigns=moto_ota.campaigns,
        devices=moto_ota.devices,
        stats=moto_ota.stats,
        firmware=moto_ota.firmware,
        dlq=DeadLetterService(dead_letter_stores(aws_stack.settings()), {}),
    )


@pytest.fixture
def moto_streaming_routes(moto_ota: OtaServices) -> Mapping[tuple[str, str], StreamingRoute]:
    return firmware_streaming_routes(moto_ota.firmware)


@pytest.fixture
def deployable_firmware(moto_ota: OtaServices) -> str:
    """A 2.0.0 package, registered through the registry, for the fleet's Accords (on 1.0.0)."""
    moto_ota.deps.fleet.put(fleet(FLEET_SIZE))
    metadata = {
        "name": "fw",
        "version": "2.0.0",
        "device_model": "Accord",
        "manufacturer": "Acme",
    }
    result = moto_ota.firmware.upload(io.BytesIO(b"image" * 1000), metadata, filename="fw.bin")
    return result.record.firmware_id
