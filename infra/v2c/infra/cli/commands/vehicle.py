"""`v2c vehicle`: onboarding and inventory (register, import, list, show, update, decommission).

Each command calls the fleet-manager API (`/api/v1/vehicles`), so it works
the same against the local stack and a deployment. `register` makes the
vehicle's key and CSR here unless given `--csr`: the key is written 0600 to
`--key-out` and never printed, logged or sent (an existing key file is used
again, which makes registering twice return the same certificate); the
certificate the API issues goes to `--cert-out`. Tables keep the VIN whole
at 80 columns; `-o json` prints the API's answer instead. `import` sends a
large file in requests of `IMPORT_CHUNK` rows, with a rows-done bar on stderr.

Exit codes as every `v2c` command (`v2c.infra.cli.errors`): 0 done, 1 the API
failed or could not be reached, 2 bad options, 3 refused (4xx), 4 no stack;
`import` exits 3 when any row failed (the others are registered).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from v2c.contract.certificate_renewal import build_csr
from v2c.contract.errors import InvalidInput
from v2c.infra.cli.api_command import (
    ApiKey,
    ApiUrl,
    AsJson,
    AsRole,
    Format,
    Output,
    Stack,
    Wide,
    api_client,
)
from v2c.infra.cli.bulk_rows import chunked, merged
from v2c.infra.cli.errors import REFUSED
from v2c.infra.cli.output import dump, wants_json
from v2c.infra.cli.tables import Column, Kind, fitted_table
from v2c.infra.pki.authority import KEY_MODE, write_atomic

app = typer.Typer(name="vehicle", help="Vehicle onboarding and inventory.", no_args_is_help=True)

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)
BASE: Final = "/api/v1/vehicles"
IMPORT_CHUNK: Final = 500  # rows per bulk request: progress, and files past one request's cap
Attr = Annotated[
    list[str] | None, typer.Option("--attr", help="Attribute key=value (repeat for more).")
]


_dump = dump


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


def vehicle_table(
    items: list[dict[str, Any]],
    *,
    title: str | None = None,
    wide: bool = False,
    width: int | None = None,
) -> Table:
    """The inventory at 80 columns: the VIN and the version never wrap or
    shrink; the model folds; the region, then the date, give way first."""
    columns = [
        Column("vehicle", Kind.ID),
        Column("model"),
        Column("region", Kind.FIXED, drop=2),
        Column("version", Kind.ID),
        Column("status", Kind.FIXED),
        Column("seen", Kind.FIXED, drop=1),
    ]
    rows = [
        (
            v["vehicle_id"],
            Text(v["model"]),
            v["region"],
            Text(v["installed_version"]),
            v["status"] if v["status"] == "active" else "decomm.",
            _when(v.get("last_seen_at"))[:10],
        )
        for v in items
    ]
    return fitted_table(columns, rows, title=title, wide=wide, width=width)


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
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Register a vehicle; with a CSR (made here or --csr) its certificate is issued."""
    as_json = wants_json(output, as_json)
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
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Register many vehicles at once (per-row results; up to 10,000 rows)."""
    as_json = wants_json(output, as_json)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc}") from exc
    kind = "text/csv" if file.suffix.lower() == ".csv" else "application/json"
    params = {"replace": "true"} if replace else None
    bodies = list(chunked(text, kind, IMPORT_CHUNK))
    total = sum(rows for _, rows in bodies)
    progress = Progress(
        TextColumn("registering"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
        console=_err, disable=as_json or len(bodies) < 2,
    )  # fmt: skip
    answers = []
    with api_client(stack, api_url, api_key, as_role) as client, progress:
        task = progress.add_task("rows", total=total)
        for body, count in bodies:
            answers.append(client.post_text(f"{BASE}/bulk", body, kind, params))
            progress.advance(task, count)
    answer = merged(answers, [count for _, count in bodies])
    if as_json:
        _dump(answer)
    else:
        _err.print(
            f"created {answer['created']}, updated {answer['updated']}, "
            f"unchanged {answer['unchanged']}, failed {answer['failed']}"
        )
        failed = [r for r in answer["results"] if r["status"] >= 400]
        if failed:
            columns = [
                Column("row", Kind.FIXED, justify="right"),
                Column("vehicle", Kind.ID),
                Column("status", Kind.FIXED),
                Column("why"),
            ]
            rows = [
                (str(r["row"]), r["vehicle_id"], str(r["status"]), Text(r["detail"]))
                for r in failed
            ]
            _out.print(fitted_table(columns, rows))
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
    output: Output = Format.TABLE,
    wide: Wide = False,
    as_json: AsJson = False,
) -> None:
    """List and search the inventory."""
    as_json = wants_json(output, as_json)
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
    _out.print(vehicle_table(answer["items"], wide=wide))
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
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """One vehicle: versions, active update, certificate, last seen."""
    as_json = wants_json(output, as_json)
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
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Edit a vehicle's attributes (merged), hardware id or make."""
    as_json = wants_json(output, as_json)
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
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Decommission a vehicle: certificate revoked, updates cancelled, never targeted again."""
    as_json = wants_json(output, as_json)
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
