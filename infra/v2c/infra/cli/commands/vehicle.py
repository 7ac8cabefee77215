"""`v2c vehicle`: onboarding and inventory (register, import, list, show, update, decommission).

Each command calls the fleet-manager API (`/api/v1/vehicles`), so it works
the same against the local stack and a deployment. `register` makes the
vehicle's key and CSR here unless given `--csr`: the key is written 0600 to
`--key-out` and never printed, logged or sent (an existing key file is used
again, which makes registering twice return the same certificate); the
certificate the API issues goes to `--cert-out`. Tables keep the VIN whole
at 80 columns; `--json` prints the API's answer instead.

Exit codes as every `v2c` command (`v2c.infra.cli.errors`): 0 done, 1 the API
failed or could not be reached, 2 bad options, 3 refused (4xx) or no stack;
`import` exits 3 when any row failed (the others are registered).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from v2c.contract.certificate_renewal import build_csr
from v2c.contract.errors import InvalidInput
from v2c.infra.cli.api_command import ApiKey, ApiUrl, AsJson, AsRole, Stack, api_client
from v2c.infra.cli.errors import REFUSED
from v2c.infra.pki.authority import KEY_MODE, write_atomic

app = typer.Typer(name="vehicle", help="Vehicle onboarding and inventory.", no_args_is_help=True)

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)
BASE: Final = "/api/v1/vehicles"
VIN_WIDTH: Final = 21  # "VIN-" and 17 characters
Attr = Annotated[
    list[str] | None, typer.Option("--attr", help="Attribute key=value (repeat for more).")
]


def _dump(answer: Any) -> None:
    sys.stdout.write(json.dumps(answer, indent=2) + "\n")


def _pairs(values: list[str] | None, option: str = "--attr") -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} is not key=value", param_hint=option)
        pairs[key] = text
    return pairs


def load_or_make_key(path: Path) -> tuple[ec.EllipticCurvePrivateKey, bool]:
    """The EC key in `path`, or a new P-256 one written there 0600; (key, made)."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            # Never echo the file: it may be a key of another kind.
            raise typer.BadParameter(f"{path} is not a PEM private key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise typer.BadParameter(f"{path} is not an EC private key")
        return key, False
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(path, pem, KEY_MODE)
    return key, True


def _when(value: Any) -> str:
    return "-" if not value else str(value)[:19].replace("T", " ")


def vehicle_table(items: list[dict[str, Any]], *, title: str | None = None) -> Table:
    """The inventory at 80 columns: the VIN never wraps or shrinks."""
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
        title_justify="left",
    )
    # Fixed: the VIN, the region (14 at most), the status (7) and the date (10);
    # model and version share what is left and fold.
    table.add_column("vehicle", no_wrap=True, min_width=VIN_WIDTH)
    table.add_column("model", overflow="fold", min_width=6, ratio=2)
    table.add_column("region", no_wrap=True, min_width=9)
    table.add_column("version", overflow="fold", min_width=7, ratio=1)
    table.add_column("status", no_wrap=True, min_width=7)
    table.add_column("seen", no_wrap=True, min_width=10)
    for v in items:
        status = v["status"] if v["status"] == "active" else "decomm."
        table.add_row(
            v["vehicle_id"],
            Text(v["model"]),
            v["region"],
            Text(v["installed_version"]),
            status,
            _when(v.get("last_seen_at"))[:10],
        )
    return table


def show_vehicle(vehicle: dict[str, Any]) -> None:
    table = Table(title=f"vehicle {vehicle['vehicle_id']}", show_header=False, title_justify="left")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key in ("status", "model", "make", "year", "region", "hardware_id", "installed_version"):
        table.add_row(key, Text(str(vehicle.get(key, ""))))
    for key, value in sorted((vehicle.get("attributes") or {}).items()):
        table.add_row(f"attr {key}", Text(value))
    cert = vehicle.get("certificate")
    if cert:
        table.add_row("certificate", cert["certificate_id"])
        table.add_row("cert expires", _when(cert.get("expires_at")))
        if cert.get("revoked_at"):
            table.add_row("cert revoked", _when(cert["revoked_at"]))
    else:
        table.add_row("certificate", "none (inventory only)")
    update = vehicle.get("active_update")
    if update:
        line = f"{update['update_id']} {update['state']} {update['from_version']} -> "
        table.add_row("active update", Text(line + update["to_version"]))
    for key in ("last_seen_at", "last_report_at", "last_telemetry_at", "registered_at"):
        if key in vehicle:
            table.add_row(key.removesuffix("_at").replace("_", " "), _when(vehicle[key]))
    if vehicle.get("decommissioned_at"):
        table.add_row("decommissioned", _when(vehicle["decommissioned_at"]))
        table.add_row("by", Text(vehicle.get("decommissioned_by", "")))
    _out.print(table)


@app.command("register")
def register(
    vehicle_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    model: Annotated[str, typer.Option(help="Model, e.g. Accord.")],
    region: Annotated[str, typer.Option(help="Region: us-east-1, eu-west-1, ap-southeast-2.")],
    year: Annotated[int, typer.Option(min=1900, max=2100, help="Model year.")],
    hardware_id: Annotated[str | None, typer.Option(help="Hardware id.")] = None,
    make: Annotated[str | None, typer.Option(help="Make, e.g. Honda.")] = None,
    installed_version: Annotated[
        str | None, typer.Option(help="Installed version (new vehicle: 1.0.0).")
    ] = None,
    attr: Attr = None,
    csr: Annotated[
        Path | None, typer.Option("--csr", help="A CSR (PEM) made elsewhere; no key is made.")
    ] = None,
    key_out: Annotated[
        Path | None,
        typer.Option(
            help="The vehicle's key (made here, 0600; reused if present). Default ./<VIN>.key."
        ),
    ] = None,
    cert_out: Annotated[
        Path | None, typer.Option(help="Where the certificate goes. Default ./<VIN>.pem.")
    ] = None,
    inventory_only: Annotated[
        bool, typer.Option(help="No CSR: the inventory only, no certificate.")
    ] = False,
    replace: Annotated[
        bool, typer.Option(help="Another key may take over the VIN (its certificate revoked).")
    ] = False,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """Register a vehicle; with a CSR (made here or --csr) its certificate is issued."""
    body: dict[str, Any] = {
        "vehicle_id": vehicle_id,
        "model": model,
        "region": region,
        "year": year,
        "replace": replace,
    }
    for name, value in (
        ("hardware_id", hardware_id),
        ("make", make),
        ("installed_version", installed_version),
    ):
        if value is not None:
            body[name] = value
    if attr:
        body["attributes"] = _pairs(attr)
    made = False
    if csr is not None and inventory_only:
        raise typer.BadParameter("--csr and --inventory-only exclude each other")
    if csr is not None:
        try:
            body["csr"] = csr.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {csr}: {exc}", param_hint="--csr") from exc
    elif not inventory_only:
        key_path = key_out or Path(f"{vehicle_id}.key")
        try:
            key, made = load_or_make_key(key_path)
            body["csr"] = build_csr(key, vehicle_id)
        except InvalidInput as exc:
            raise typer.BadParameter(exc.detail) from exc
        except ValueError as exc:  # not a name a certificate can carry
            raise typer.BadParameter(f"cannot build a CSR for {vehicle_id!r}") from exc
        if made:
            _err.print(f"key written to {key_path} (0600)")
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.post(BASE, body)
    cert = answer.get("certificate") or {}
    if cert.get("pem") and (csr is not None or not inventory_only):
        target = cert_out or Path(f"{vehicle_id}.pem")
        target.write_text(cert["pem"])
        _err.print(f"certificate {cert['certificate_id']} written to {target}")
    if as_json:
        _dump(answer)
        return
    _err.print(f"{vehicle_id}: {answer['outcome']}")
    show_vehicle(answer)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV (header row) or JSON array of vehicles.")],
    replace: Annotated[
        bool, typer.Option(help="Rows with a CSR may take over a VIN with another key.")
    ] = False,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """Register many vehicles at once (per-row results; up to 10,000 rows)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc}") from exc
    kind = "text/csv" if file.suffix.lower() == ".csv" else "application/json"
    params = {"replace": "true"} if replace else None
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.post_text(f"{BASE}/bulk", text, kind, params)
    if as_json:
        _dump(answer)
    else:
        _err.print(
            f"created {answer['created']}, updated {answer['updated']}, "
            f"unchanged {answer['unchanged']}, failed {answer['failed']}"
        )
        failed = [r for r in answer["results"] if r["status"] >= 400]
        if failed:
            table = Table("row", "vehicle", "status", "why", box=box.SIMPLE_HEAD)
            for row in failed:
                table.add_row(
                    str(row["row"]), row["vehicle_id"], str(row["status"]), Text(row["detail"])
                )
            _out.print(table)
    if answer["failed"]:
        raise typer.Exit(REFUSED)


def _days_from_now(days: int | None) -> str | None:
    """RFC 3339 UTC, `days` from now (the API's timestamp format)."""
    if days is None:
        return None
    moment = datetime.now(UTC) + timedelta(days=days)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@app.command("list")
def list_(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    region: Annotated[str | None, typer.Option(help="Only this region.")] = None,
    installed_version: Annotated[str | None, typer.Option(help="Only this version.")] = None,
    status: Annotated[str | None, typer.Option(help="active or decommissioned.")] = None,
    attr: Attr = None,
    seen_before: Annotated[
        str | None, typer.Option(help="Last seen before (RFC 3339), or never.")
    ] = None,
    seen_after: Annotated[str | None, typer.Option(help="Last seen after (RFC 3339).")] = None,
    vin_prefix: Annotated[str | None, typer.Option(help="VINs starting so.")] = None,
    expiring_within: Annotated[
        int | None,
        typer.Option(min=0, max=3650, help="Certificates expiring within this many days."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Per page.")] = 50,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not the first.")] = False,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """List and search the inventory."""
    params: dict[str, Any] = {
        "model": model,
        "region": region,
        "installed_version": installed_version,
        "status": status,
        "attribute": [f"{k}={v}" for k, v in _pairs(attr).items()] or None,
        "last_seen_before": seen_before,
        "last_seen_after": seen_after,
        "vin_prefix": vin_prefix,
        "certificate_expires_before": _days_from_now(expiring_within),
        "limit": limit,
    }
    with api_client(stack, api_url, api_key, as_role) as client:
        if all_pages:
            items = [v for page in client.pages(BASE, **params) for v in page["items"]]
            answer: dict[str, Any] = {"items": items, "next_cursor": None}
        else:
            answer = client.get(BASE, **params)
    if as_json:
        _dump(answer)
        return
    _out.print(vehicle_table(answer["items"]))
    more = answer.get("next_cursor")
    count = len(answer["items"])
    if not count:
        _err.print("no vehicles match")
    _err.print(f"{count} vehicles" + ("; more with --all" if more else ""))


@app.command("show")
def show(
    vehicle_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """One vehicle: versions, active update, certificate, last seen."""
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.get(f"{BASE}/{vehicle_id}")
    if as_json:
        _dump(answer)
    else:
        show_vehicle(answer)


@app.command("update")
def update(
    vehicle_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    attr: Attr = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", help="Remove this attribute (repeat).")
    ] = None,
    hardware_id: Annotated[str | None, typer.Option(help="New hardware id.")] = None,
    make: Annotated[str | None, typer.Option(help="New make.")] = None,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """Edit a vehicle's attributes (merged), hardware id or make."""
    attributes: dict[str, str | None] = dict(_pairs(attr))
    attributes.update(dict.fromkeys(unset or []))
    body: dict[str, Any] = {}
    if attributes:
        body["attributes"] = attributes
    if hardware_id is not None:
        body["hardware_id"] = hardware_id
    if make is not None:
        body["make"] = make
    if not body:
        raise typer.BadParameter("nothing to change: --attr, --unset, --hardware-id or --make")
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.patch(f"{BASE}/{vehicle_id}", body)
    if as_json:
        _dump(answer)
    else:
        show_vehicle(answer)


@app.command("decommission")
def decommission(
    vehicle_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    reason: Annotated[str, typer.Option(help="Recorded with the decommission.")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """Decommission a vehicle: certificate revoked, updates cancelled, never targeted again."""
    if not yes and not typer.confirm(f"decommission {vehicle_id}?", err=True):
        raise typer.Exit(1)
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.delete(f"{BASE}/{vehicle_id}", reason=reason or None)
    if as_json:
        _dump(answer)
        return
    cancelled = answer.get("cancelled_updates") or []
    left = answer.get("not_cancellable_updates") or []
    _err.print(
        f"{vehicle_id} decommissioned"
        + (" (already)" if answer.get("already_decommissioned") else "")
        + f"; updates cancelled: {len(cancelled)}"
        + (f"; still installing: {', '.join(left)}" if left else "")
    )
    show_vehicle(answer)
