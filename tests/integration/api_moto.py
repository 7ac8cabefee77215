"""The API over the production services on this test's moto (helpers: `hostile_http`).

Registered once in `tests/conftest.py`, beside `api_fixtures` and
`moto_fixtures`. A plugin's fixtures reach every module of the session, so
nothing here overrides another plugin's: a module picks these by overriding
the `api_fixtures` defaults itself, the whole server at once

    @pytest.fixture
    def api_server(moto_api_server: ApiHttpServer) -> ApiHttpServer:
        return moto_api_server

or only what is behind it (`api_services` from `moto_api_services`).

`moto_ota`: the OTA services as the Lambda functions build them from their
environment, with a software signer that a test can hold (`signing_gate`)
and notifications recorded in `ota_sink`; `moto_api_services`: campaigns,
devices, stats, firmware, the DLQ and the vehicle inventory (`moto_vehicles`:
a CA of its own, `device.deleted` consumed in process: `vehicle_events`) over
them; `moto_campaign_api`: the campaign routes only; `moto_streaming_routes`:
the real streaming firmware upload; `moto_api_server`: all of it on loopback;
`deployable_firmware`: a package, uploaded through the registry, that campaigns for the
`ota_support.fleet` vehicles can deploy; `registered_firmware`: one written
straight into S3 and the firmware table, as the registry leaves it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from api_fixtures import serving
from hostile_http import SigningGate
from ota_support import RecordingSink, S3Packages, fleet

from v2c.handlers.api import ApiAuth, ApiServices, OtaApi
from v2c.handlers.api.config import dashboard_reads, health_checks
from v2c.handlers.dlq.service import DeadLetterService
from v2c.handlers.ota.config import OtaConfig, OtaServices, build_services
from v2c.handlers.ota.device_events import VEHICLES_SOURCE
from v2c.handlers.ota.events import EventBridgePublisher
from v2c.handlers.ota_device_events import vehicle_updates
from v2c.handlers.signing.software import SoftwareSigner
from v2c.handlers.vehicles.config import build_vehicle_service
from v2c.handlers.vehicles.service import VehicleService
from v2c.infra.local.firmware_streaming import firmware_streaming_routes
from v2c.infra.local.http_adapter import ApiHttpServer, StreamingRoute
from v2c.infra.local.http_body import HttpLimits
from v2c.infra.local.vehicle_issuer import LocalCaIssuer
from v2c.infra.local.vehicle_service import InProcessEvents
from v2c.infra.local.wiring import dead_letter_stores, handler_environment
from v2c.infra.pki.authority import init_pki

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

FLEET_SIZE = 12


@pytest.fixture
def signing_gate() -> SigningGate:
    return SigningGate()


@pytest.fixture
def ota_sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def moto_ota(
    aws_stack: AwsStack,
    monkeypatch: pytest.MonkeyPatch,
    signing_gate: SigningGate,
    ota_sink: RecordingSink,
) -> Iterator[OtaServices]:
    for name, value in handler_environment(aws_stack.settings()).items():
        monkeypatch.setenv(name, value)
    signer = SoftwareSigner.generate(key_id="k")
    sign = signer._sign

    def gated(message: bytes) -> bytes:
        signing_gate.wait()
        return sign(message)

    signer._sign = gated  # type: ignore[method-assign]
    services = build_services(OtaConfig.from_env(), sink=ota_sink, signer=signer)
    yield services
    services.close()


@pytest.fixture
def vehicle_events(moto_ota: OtaServices, aws_stack: AwsStack) -> InProcessEvents:
    """`device.deleted` put on the bus and consumed by the OTA side in process."""
    settings = aws_stack.settings()
    bus = EventBridgePublisher(
        settings.aws.client("events"), settings.resources.event_bus, source=VEHICLES_SOURCE
    )
    return InProcessEvents(bus, vehicle_updates(moto_ota), settings.aws.region)


@pytest.fixture
def moto_vehicles(
    moto_ota: OtaServices, vehicle_events: InProcessEvents, tmp_path: Path
) -> VehicleService:
    """The inventory over this test's moto, certificates from a CA of its own
    (no broker: admission is the stack tests' business)."""
    pki = tmp_path / "vehicle-pki"
    init_pki(pki)
    return build_vehicle_service(moto_ota, issuer=LocalCaIssuer(pki, None), events=vehicle_events)


@pytest.fixture
def moto_api_services(
    moto_ota: OtaServices, aws_stack: AwsStack, moto_vehicles: VehicleService
) -> ApiServices:
    return ApiServices(
        health_checks=health_checks(dict(os.environ)),
        campaigns=moto_ota.campaigns,
        devices=moto_ota.devices,
        stats=moto_ota.stats,
        firmware=moto_ota.firmware,
        dlq=DeadLetterService(dead_letter_stores(aws_stack.settings()), {}),
        vehicles=moto_vehicles,
        **dashboard_reads(moto_ota, dict(os.environ))._asdict(),
    )


@pytest.fixture
def moto_campaign_api(moto_ota: OtaServices) -> ApiServices:
    return ApiServices(campaigns=moto_ota.campaigns, devices=moto_ota.devices, stats=moto_ota.stats)


@pytest.fixture
def moto_streaming_routes(moto_ota: OtaServices) -> Mapping[tuple[str, str], StreamingRoute]:
    return firmware_streaming_routes(moto_ota.firmware)


@pytest.fixture
def moto_api_server(
    moto_api_services: ApiServices,
    api_auth: ApiAuth,
    moto_streaming_routes: Mapping[tuple[str, str], StreamingRoute],
    api_extra_routes: Callable[[OtaApi], None] | None,
    api_limits: HttpLimits,
) -> Iterator[ApiHttpServer]:
    with serving(
        moto_api_services, api_auth, moto_streaming_routes, api_extra_routes, api_limits
    ) as server:
        yield server


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


@pytest.fixture
def registered_firmware(aws_stack: AwsStack) -> str:
    """A 2.0.0 package for Accords, written where the registry would have put it.

    Bypasses the registry on purpose: a test of the campaign routes should
    not fail for a firmware upload's reasons.
    """
    package = S3Packages(aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket).add(
        "2.0.0", b"image" * 100
    )
    aws_stack.aws.client("dynamodb").put_item(
        TableName=aws_stack.names.firmware_table,
        Item={
            "firmware_id": {"S": package.firmware_id},
            "name": {"S": "fw"},
            "version": {"S": "2.0.0"},
            "device_model": {"S": "Accord"},
            "size_bytes": {"N": str(package.size_bytes)},
            "sha256": {"S": package.sha256_hex},
            "status": {"S": "available"},
            "s3_key": {"S": f"firmware/{package.firmware_id}"},
        },
    )
    return package.firmware_id
