"""A simulated fleet provisioned in a stack: certificates, broker admission, trusted key, registry.

The vehicle simulator knows the wire contract and nothing of the cloud's code
(`tests/unit/test_layering.py`). What it needs from a stack is made here, on
the composition side, and handed to `FleetSimulator` ready-made:

* each vehicle's client certificate (CN = its vehicle id), issued once and
  cached in the stack's PKI directory (`<pki>/vehicles/<vehicle id>.pem|.key`,
  as `v2c pki issue` writes them), reused while it still verifies against
  the CA, carries the right name and is valid for another day; a CA
  re-created with `--force` invalidates them all, and they are issued again;
* admission of vehicles issued while the broker runs to its per-VIN policy
  (`broker_admin`): the broker takes the certificate's CN as the user name;
* the key set the vehicles trust: the stack's campaign signing key (KMS),
  under the key id the OTA handlers sign with;
* the registrar that writes every booted vehicle, with the version it really
  runs, to the cloud's vehicle registry, so campaigns can target it.

`stack_fleet(settings, n, ...)` does all of it and returns the simulator, for
`v2c sim`, `v2c demo`, `v2c bench fleet` and the fleet tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from v2c.contract.errors import ConfigurationError
from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.handlers.ota.fleet import FleetRegistry, Vehicle
from v2c.handlers.ota.fleet_index.store import FleetIndex
from v2c.infra.local.broker_admin import register_in_stack
from v2c.infra.pki.authority import (
    CertificateAuthority,
    CertPaths,
    PkiPaths,
    build_vehicle_certificate,
    common_name,
    load_ca,
    write_identity,
)
from v2c.infra.settings import MqttSettings, StackSettings
from v2c.vehicle_sim.fleet.identity import (
    DEFAULT_MODELS,
    DEFAULT_PREFIX,
    FleetMember,
    fleet_members,
)
from v2c.vehicle_sim.fleet.simulator import FleetSimulator, FleetVehicle, Registrar
from v2c.vehicle_sim.mqtt_async import MqttTarget

TRUSTED_SINCE: Final = datetime(2020, 1, 1, tzinfo=UTC)


# -- certificates ---------------------------------------------------------------


def _usable(ca: CertificateAuthority, paths: CertPaths, vehicle_id: str, now: datetime) -> bool:
    if not (paths.cert.exists() and paths.key.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        cert.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature, OSError):
        return False
    valid_now = cert.not_valid_before_utc <= now
    valid_tomorrow = now + timedelta(days=1) < cert.not_valid_after_utc
    return common_name(cert) == vehicle_id and valid_now and valid_tomorrow


def ensure_vehicle_certs(
    pki_dir: Path, vehicle_ids: Iterable[str], *, now: datetime | None = None
) -> tuple[dict[str, CertPaths], int]:
    """Paths of every vehicle's certificate, and how many had to be issued."""
    at = now or datetime.now(tz=UTC)
    layout = PkiPaths.for_dir(pki_dir)
    ca = load_ca(pki_dir)
    out: dict[str, CertPaths] = {}
    issued = 0
    for vehicle_id in vehicle_ids:
        paths = CertPaths(
            layout.vehicles_dir / f"{vehicle_id}.pem",
            layout.vehicles_dir / f"{vehicle_id}.key",
            layout.ca_cert,
        )
        if not _usable(ca, paths, vehicle_id, at):
            identity = build_vehicle_certificate(ca, vehicle_id, now=at)
            write_identity(identity, paths.cert, paths.key)
            issued += 1
        out[vehicle_id] = paths
    return out, issued


# -- the stack's side -----------------------------------------------------------


def stack_trusted_keys(settings: StackSettings) -> TrustedKeySet:
    """What the vehicles trust: the stack's campaign signing key (KMS), under
    the key id the OTA handlers sign with (its fingerprint, as they are
    configured by `v2c stack up`)."""
    from v2c.handlers.signing.kms import KmsSigner

    signer = KmsSigner(settings.aws.client("kms"), settings.resources.signing_key_alias)
    return TrustedKeySet([TrustedKey(signer.key_id, signer.public_key(), TRUSTED_SINCE)])


def fleet_vehicles(
    settings: StackSettings,
    members: Sequence[FleetMember],
    *,
    tls: bool | None = None,
    pki_dir: Path | None = None,
) -> tuple[list[FleetVehicle], int]:
    """Where each member connects, and how many certificates had to be issued.

    With mTLS (the stack's broker has a TLS listener, unless `tls` says
    otherwise) every vehicle gets its own certificate and is admitted to the
    running broker's policy: those `v2c stack up` found in the PKI already
    are; the rest are registered now (a no-op for the others).
    """
    mqtt = settings.require_mqtt()
    has_tls = mqtt.tls_port is not None and mqtt.ca_file is not None
    if not (has_tls if tls is None else tls):
        plain = MqttTarget(mqtt.host, mqtt.port)
        return [FleetVehicle(m, plain) for m in members], 0
    pki = pki_dir or (mqtt.ca_file.parent if mqtt.ca_file else None)
    if mqtt.tls_port is None or mqtt.ca_file is None or pki is None:
        raise ConfigurationError("the stack's broker has no TLS listener for vehicles")
    certs, issued = ensure_vehicle_certs(pki, [m.vehicle_id for m in members])
    register_in_stack(settings, certs)
    return tls_vehicles(members, mqtt, certs), issued


def tls_vehicles(
    members: Sequence[FleetMember], mqtt: MqttSettings, certs: Mapping[str, CertPaths]
) -> list[FleetVehicle]:
    """Each member on the broker's mTLS listener with its own certificate."""
    if mqtt.tls_port is None or mqtt.ca_file is None:
        raise ConfigurationError("the stack's broker has no TLS listener for vehicles")
    return [
        FleetVehicle(
            m,
            MqttTarget(
                mqtt.host,
                mqtt.tls_port,
                ca_file=mqtt.ca_file,
                cert_file=certs[m.vehicle_id].cert,
                key_file=certs[m.vehicle_id].key,
            ),
        )
        for m in members
    ]


def registry_writer(settings: StackSettings, hardware_id: str = "") -> Registrar:
    """Write every booted vehicle to the cloud's registry with the version it runs."""

    def register(installed: Sequence[tuple[FleetMember, str]]) -> int:
        aws, names = settings.aws, settings.resources
        index = FleetIndex(aws.client("s3"), names.firmware_bucket)  # campaigns target by it
        registry = FleetRegistry(aws.client("dynamodb"), names.vehicle_registry_table, index)
        return registry.put(
            Vehicle(
                vehicle_id=m.vehicle_id,
                model=m.model,
                region=m.region,
                year=m.year,
                make=m.make,
                hardware_id=hardware_id,
                installed_version=version,
            )
            for m, version in installed
        )

    return register


def stack_fleet(
    settings: StackSettings,
    n: int,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    regions: int | Sequence[str] = 3,
    vin_prefix: str = DEFAULT_PREFIX,
    trusted: TrustedKeySet | None = None,
    tls: bool | None = None,
    pki_dir: Path | None = None,
    register: bool = True,
    hardware_id: str = "",
    **simulator: Any,
) -> FleetSimulator:
    """N vehicles provisioned in the stack, ready to `start()`.

    Blocking (KMS, certificates, the broker's admin API): call it before the
    fleet's loop runs, or in a worker thread. `simulator` goes to
    `FleetSimulator` (faults, time_scale, base_dir, installed_version, config, ...).
    """
    members = fleet_members(n, models=models, regions=regions, prefix=vin_prefix)
    vehicles, _issued = fleet_vehicles(settings, members, tls=tls, pki_dir=pki_dir)
    return FleetSimulator(
        vehicles,
        trusted if trusted is not None else stack_trusted_keys(settings),
        hardware_id=hardware_id,
        registrar=registry_writer(settings, hardware_id) if register else None,
        **simulator,
    )
