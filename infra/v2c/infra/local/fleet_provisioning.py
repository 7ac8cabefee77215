"""A simulated fleet provisioned in a stack: onboarded through the API, trusted key, registry.

The vehicle simulator knows the wire contract and nothing of the cloud's code
(`tests/unit/test_layering.py`). What it needs from a stack is made here, on
the composition side, and handed to `FleetSimulator` ready-made:

* each vehicle onboarded as a fleet manager onboards one (`fleet_onboarding`):
  its key (kept in the stack's PKI directory, `<pki>/vehicles/<vehicle id>.key`,
  as `v2c pki issue` writes it, generated when missing) signs a CSR, and
  the registration service (`POST /api/v1/vehicles/bulk`) issues its
  client certificate (CN = its vehicle id) through the stack's CA, admits
  it to the broker's per-VIN policy and registers it, with the version a
  new vehicle leaves the factory with; a vehicle whose certificate is on
  disk for its key is not signed again;
* the key set the vehicles trust: the stack's campaign signing key (KMS),
  under the key id the OTA handlers sign with;
* the registrar that, once the vehicles booted, corrects the registry for
  those that run another version than they were registered with (a fleet
  directory reused from an earlier run), through the same service.

`stack_fleet(settings, n, ...)` does all of it and returns the simulator, for
`v2c sim`, `v2c demo`, `v2c bench fleet` and the fleet tests. Certificates
issued before a stack starts (`ensure_vehicle_certs`: `v2c demo`, the
rollout bench) are admitted by `v2c stack up` at once and reused by the
registration.
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
from v2c.infra.local.broker_admin import register_in_stack
from v2c.infra.local.fleet_onboarding import (
    onboard_inventory,
    onboard_with_certificates,
    onboarding_for,
)
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
DEFAULT_INSTALLED_VERSION: Final = "1.0.0"  # FleetSimulator's own default


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
    register: bool = True,
    installed_version: str = "1.0.0",
    hardware_id: str = "",
) -> tuple[list[FleetVehicle], int]:
    """Where each member connects, and how many keys had to be made.

    With mTLS (the stack's broker has a TLS listener, unless `tls` says
    otherwise) every vehicle is onboarded with a CSR and gets its own
    certificate (`fleet_onboarding`); without, it is registered in the
    inventory only. `register=False` (a bench without a registry) issues
    certificates locally and admits them to the broker, as before onboarding
    existed.
    """
    mqtt = settings.require_mqtt()
    has_tls = mqtt.tls_port is not None and mqtt.ca_file is not None
    if not (has_tls if tls is None else tls):
        if register:
            onboard_inventory(
                onboarding_for(settings),
                members,
                installed_version=installed_version,
                hardware_id=hardware_id,
            )
        plain = MqttTarget(mqtt.host, mqtt.port)
        return [FleetVehicle(m, plain) for m in members], 0
    pki = pki_dir or (mqtt.ca_file.parent if mqtt.ca_file else None)
    if mqtt.tls_port is None or mqtt.ca_file is None or pki is None:
        raise ConfigurationError("the stack's broker has no TLS listener for vehicles")
    if not register:
        certs, issued = ensure_vehicle_certs(pki, [m.vehicle_id for m in members])
        register_in_stack(settings, certs)
        return tls_vehicles(members, mqtt, certs), issued
    vehicles_dir = PkiPaths.for_dir(pki).vehicles_dir
    made = sum(1 for m in members if not (vehicles_dir / f"{m.vehicle_id}.key").exists())
    paths = onboard_with_certificates(
        onboarding_for(settings),
        members,
        vehicles_dir,
        installed_version=installed_version,
        hardware_id=hardware_id,
    )
    certs = {v: CertPaths(cert, key, mqtt.ca_file) for v, (cert, key) in paths.items()}
    return tls_vehicles(members, mqtt, certs), made


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


def registry_writer(
    settings: StackSettings, hardware_id: str = "", *, registered_as: str | None = None
) -> Registrar:
    """Record every booted vehicle's version in the registry, through the
    registration service (inventory fields only; certificates untouched).
    With `registered_as`, only vehicles running another version than that
    (what they were onboarded with) are sent."""

    def register(installed: Sequence[tuple[FleetMember, str]]) -> int:
        moved = [(m, v) for m, v in installed if registered_as is None or v != registered_as]
        return onboard_inventory(
            onboarding_for(settings),
            [m for m, _ in moved],
            {m.vehicle_id: v for m, v in moved},
            hardware_id=hardware_id,
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
    version = str(simulator.get("installed_version", DEFAULT_INSTALLED_VERSION))
    vehicles, _made = fleet_vehicles(
        settings,
        members,
        tls=tls,
        pki_dir=pki_dir,
        register=register,
        installed_version=version,
        hardware_id=hardware_id,
    )
    registrar = registry_writer(settings, hardware_id, registered_as=version) if register else None
    return FleetSimulator(
        vehicles,
        trusted if trusted is not None else stack_trusted_keys(settings),
        hardware_id=hardware_id,
        registrar=registrar,
        **simulator,
    )
