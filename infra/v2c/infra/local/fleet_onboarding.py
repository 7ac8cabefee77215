"""A simulated fleet onboarded the way a fleet manager onboards vehicles: through the API.

Each vehicle keeps its private key where `v2c pki issue` puts it
(`<pki>/vehicles/<vehicle id>.key`, 0600, generated here when missing, never
sent anywhere) and sends a CSR; the registration service (`POST
/api/v1/vehicles/bulk`, `BULK_ROWS` vehicles a request) issues the
certificate through the stack's CA, admits the vehicle to the broker and
writes the registry, all in one place, so a simulated vehicle is in the
inventory exactly as a real one would be. Nothing here writes a table.

A vehicle whose certificate is already on disk (a second run, `v2c demo`'s
certificates issued before the stack started) sends a CSR for the same key:
the service finds it registered with that key (no write at all), or the
stack's issuer finds the certificate on disk for that key (no signing), so
a cached fleet costs reads and a few messages.

A stack without an API (a test's stack description) gets the same
registration service object in this process instead of over HTTP
(`InProcessOnboarding`). A stack whose broker has no TLS listener gets
inventory-only registrations (no CSR, no certificate).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.certificate_renewal import build_csr
from v2c.contract.errors import ConfigurationError, TransientError
from v2c.infra.pki.authority import CERT_MODE, KEY_MODE, write_atomic
from v2c.infra.settings import StackSettings
from v2c.vehicle_sim.fleet.identity import FleetMember

BULK_ROWS: Final = 500  # per request: ~0.5 MB of CSRs, well under the API's 4 MiB
BULK_PATH: Final = "/api/v1/vehicles/bulk"
TIMEOUT_S: Final = 900.0  # admitting 500 new vehicles to a large broker policy takes a while
Row = dict[str, Any]
Result = dict[str, Any]


class OnboardingFailed(TransientError):
    """Some vehicles of the fleet could not be registered."""

    reason = "onboarding_failed"


class Onboarding(Protocol):
    def register(self, rows: Sequence[Row]) -> list[Result]:
        """One result per row, in order, as the bulk route answers them."""
        ...


def _chunks(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class ApiOnboarding:
    """The stack's API, with its fleet manager's credential."""

    def __init__(self, url: str, key: str | None, *, timeout_s: float = TIMEOUT_S) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout_s
        self._session = requests.Session()
        if key:
            self._session.headers["X-API-Key"] = key

    @classmethod
    def for_stack(cls, settings: StackSettings) -> ApiOnboarding | None:
        api = settings.api
        if api is None:
            return None
        key_file = api.key_files.get("fleet_manager") or api.key_file
        key = key_file.read_text().strip() if key_file is not None and key_file.exists() else None
        return cls(api.url, key)

    def register(self, rows: Sequence[Row]) -> list[Result]:
        results: list[Result] = []
        for chunk in _chunks(rows, BULK_ROWS):
            try:
                answer = self._session.post(
                    f"{self._url}{BULK_PATH}", json=list(chunk), timeout=self._timeout
                )
            except requests.RequestException as exc:
                raise OnboardingFailed(f"cannot reach the API at {self._url}: {exc}") from exc
            if answer.status_code != 200:
                raise OnboardingFailed(
                    f"registering vehicles: HTTP {answer.status_code}: {answer.text[:300]}"
                )
            results += answer.json()["results"]
        return results


class InProcessOnboarding:
    """The registration service itself, for a stack without an API process."""

    def __init__(self, settings: StackSettings) -> None:
        self._settings = settings

    def register(self, rows: Sequence[Row]) -> list[Result]:
        from v2c.handlers.api.routes.vehicles import row_out
        from v2c.handlers.vehicles.requests import json_rows
        from v2c.infra.local.vehicle_service import registration_service

        service = registration_service(self._settings)
        parsed = json_rows(json.dumps(list(rows)), replace=False)
        return [
            row_out(r).model_dump(mode="json") for r in service.register_rows(parsed, "v2c-sim")
        ]


def onboarding_for(settings: StackSettings) -> Onboarding:
    return ApiOnboarding.for_stack(settings) or InProcessOnboarding(settings)


# -- rows and keys ------------------------------------------------------------------------


def inventory_row(member: FleetMember, installed_version: str | None, hardware_id: str = "") -> Row:
    row: Row = {
        "vehicle_id": member.vehicle_id,
        "model": member.model,
        "region": member.region,
        "year": member.year,
        "make": member.make,
    }
    if hardware_id:
        row["hardware_id"] = hardware_id
    if installed_version is not None:
        row["installed_version"] = installed_version
    return row


@dataclass
class VehicleKey:
    """A vehicle's key: read from its file, or new (written once certified)."""

    vehicle_id: str
    key: ec.EllipticCurvePrivateKey
    new: bool
    cert_path: Path
    key_path: Path

    def store(self, certificate_pem: str) -> None:
        if self.new:
            pem = self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_atomic(self.key_path, pem, KEY_MODE)
        data = certificate_pem.encode()
        try:
            unchanged = self.cert_path.read_bytes() == data
        except OSError:
            unchanged = False
        if not unchanged:
            write_atomic(self.cert_path, data, CERT_MODE)


def vehicle_key(vehicles_dir: Path, vehicle_id: str) -> VehicleKey:
    """The key on disk if it is a usable EC key, else a new one."""
    cert_path = vehicles_dir / f"{vehicle_id}.pem"
    key_path = vehicles_dir / f"{vehicle_id}.key"
    try:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if isinstance(loaded, ec.EllipticCurvePrivateKey):
            return VehicleKey(vehicle_id, loaded, False, cert_path, key_path)
    except (OSError, ValueError, TypeError):
        pass
    return VehicleKey(
        vehicle_id, ec.generate_private_key(ec.SECP256R1()), True, cert_path, key_path
    )


def _failures(results: Iterable[Result]) -> list[str]:
    return [
        f"{r.get('vehicle_id')}: {r.get('detail') or r.get('status')}"
        for r in results
        if int(r.get("status", 500)) >= 400
    ]


def _check(results: Sequence[Result], expected: int) -> None:
    if len(results) != expected:
        raise OnboardingFailed(f"the registration answered {len(results)} rows, not {expected}")
    failed = _failures(results)
    if failed:
        shown = "; ".join(failed[:5])
        raise OnboardingFailed(f"{len(failed)} vehicles not registered: {shown}")


def onboard_with_certificates(
    onboarding: Onboarding,
    members: Sequence[FleetMember],
    vehicles_dir: Path,
    *,
    installed_version: str | None,
    hardware_id: str = "",
) -> dict[str, tuple[Path, Path]]:
    """Register every member with a CSR; its (certificate, key) paths."""
    keys = [vehicle_key(vehicles_dir, m.vehicle_id) for m in members]
    rows = []
    for member, key in zip(members, keys, strict=True):
        row = inventory_row(member, installed_version, hardware_id)
        row["csr"] = build_csr(key.key, member.vehicle_id)
        if key.new:  # this key is the vehicle's now: take the VIN over from a lost one
            row["replace"] = True
        rows.append(row)
    results = onboarding.register(rows)
    _check(results, len(rows))
    paths: dict[str, tuple[Path, Path]] = {}
    for key, result in zip(keys, results, strict=True):
        certificate = result.get("certificate") or {}
        pem = certificate.get("pem")
        if not pem:
            raise ConfigurationError(f"{key.vehicle_id}: registered without a certificate")
        key.store(str(pem))
        paths[key.vehicle_id] = (key.cert_path, key.key_path)
    return paths


def onboard_inventory(
    onboarding: Onboarding,
    members: Sequence[FleetMember],
    versions: Mapping[str, str] | None = None,
    *,
    installed_version: str | None = None,
    hardware_id: str = "",
) -> int:
    """Register members in the inventory only (no certificate); returns how many."""
    rows = [
        inventory_row(m, (versions or {}).get(m.vehicle_id, installed_version), hardware_id)
        for m in members
    ]
    if not rows:
        return 0
    results = onboarding.register(rows)
    _check(results, len(rows))
    return len(rows)
