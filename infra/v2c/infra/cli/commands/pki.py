"""`v2c pki`: make the local CA and issue vehicle certificates from the shell.

The stack keeps its PKI under `<state dir>/pki`, so `--stack DIR` finds the CA
of a running stack; `--pki DIR` names a PKI directory directly. A vehicle issued
for a running stack is registered in its broker at once (the broker admits
only registered vehicles; `v2c stack up` registers every certificate in
`pki/vehicles`). Output lists file paths and fingerprints only: key material
is never printed (`-o json`: the same as one JSON object, for scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives import hashes
from rich.console import Console
from rich.text import Text

from v2c.contract.errors import V2CError
from v2c.infra.cli.errors import exit_code_for
from v2c.infra.cli.output import Format, Output, dump, wants_json
from v2c.infra.pki import authority as pki

DEFAULT_STACK_DIR = Path(".stack")

app = typer.Typer(
    name="pki",
    help="The local certificate authority: broker, service and vehicle certificates.",
    no_args_is_help=True,
)

# soft_wrap: a long path stays on one line, so it can be copied (and grepped in tests).
_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)


def _fail(error: V2CError) -> typer.Exit:
    _err.print(Text.assemble(("error: ", "bold red"), error.detail))
    return typer.Exit(code=exit_code_for(error))  # 2 a bad value, 3 no CA: `cli_errors`


def _show(label: str, path: Path) -> None:
    _out.print(Text.assemble((f"{label:<20}", "bold"), str(path)))


def _pki_dir(pki_dir: Path | None, stack: Path | None) -> Path:
    if pki_dir is not None and stack is not None:
        raise typer.BadParameter("give --pki or --stack, not both")
    if pki_dir is not None:
        return pki_dir
    return (stack if stack is not None else DEFAULT_STACK_DIR) / "pki"


@app.command("init")
def init(
    directory: Annotated[
        Path, typer.Option("--dir", help="The PKI directory to create or complete.")
    ] = DEFAULT_STACK_DIR / "pki",
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing CA (its certificates stop working)."),
    ] = False,
    service_name: Annotated[
        str, typer.Option("--service-name", help="CN (broker user) of the service identity.")
    ] = pki.SERVICE_COMMON_NAME,
    output: Output = Format.TABLE,
) -> None:
    """Create a CA, the broker's server certificate and the gateway's identity; keep what exists."""
    had_ca = pki.PkiPaths.for_dir(directory).ca_cert.exists()
    try:
        paths = pki.init_pki(directory, force=force, service_name=service_name)
        ca = pki.load_ca(directory)
    except V2CError as error:
        raise _fail(error) from None
    state = "replaced" if had_ca and force else "kept existing" if had_ca else "created"
    fingerprint = ca.certificate.fingerprint(hashes.SHA256()).hex(":")
    files = {
        "CA certificate": paths.ca_cert,
        "CA key": paths.ca_key,
        "broker certificate": paths.server.cert,
        "broker key": paths.server.key,
        "service CA": paths.service_ca_cert,
        "service certificate": paths.service.cert,
        "service key": paths.service.key,
        "admin certificate": paths.admin.cert,
        "vehicles": paths.vehicles_dir,
    }
    if wants_json(output):
        dump({
            "ca": {"state": state, "common_name": pki.common_name(ca.certificate),
                   "sha256_fingerprint": fingerprint},
            "files": {label.replace(" ", "_").lower(): str(path) for label, path in files.items()},
        })  # fmt: skip
        return
    _out.print(f"CA {state}: {pki.common_name(ca.certificate)}")
    _out.print(f"CA SHA-256 fingerprint: {fingerprint}")
    for label, path in files.items():
        _show(label, path)


@app.command("issue")
def issue(
    vin: Annotated[
        str, typer.Option("--vin", help="Vehicle id, the certificate CN: VIN-1HGBH41JXMN109186.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write <VIN>.pem and <VIN>.key [<pki>/vehicles]."),
    ] = None,
    stack: Annotated[
        Path | None,
        typer.Option("--stack", help="Use the CA of the stack whose state dir this is (DIR/pki)."),
    ] = None,
    pki_dir: Annotated[
        Path | None, typer.Option("--pki", help="Use the CA in this PKI directory.")
    ] = None,
    days: Annotated[
        int, typer.Option("--days", min=1, help="Validity in days, from now.")
    ] = pki.LEAF_VALID_DAYS,
    output: Output = Format.TABLE,
) -> None:
    """Issue a vehicle client certificate (ECC P-256, CN = vehicle id, clientAuth)."""
    source = _pki_dir(pki_dir, stack)
    try:
        paths = pki.issue_vehicle_cert(source, vin, out, valid_days=days)
    except V2CError as error:
        raise _fail(error) from None
    if not wants_json(output):
        _show("certificate", paths.cert)
        _show("key", paths.key)
        _show("CA certificate", paths.ca)
    try:
        registered = None if pki_dir is not None else _register(source.parent, vin)
    except V2CError as error:
        raise _fail(error) from None
    if wants_json(output):
        dump({
            "vehicle_id": vin, "certificate": str(paths.cert), "key": str(paths.key),
            "ca_certificate": str(paths.ca), "registered": registered,
        })  # fmt: skip
    elif registered is not None:
        _out.print(f"registered in the running broker: {registered}")


def _register(stack_dir: Path, vin: str) -> str | None:
    """Admit `vin` to the broker of the stack running in `stack_dir`, if one runs there."""
    from v2c.infra.local.broker_admin import BrokerAdminError, register_in_stack
    from v2c.infra.settings import STACK_FILE, read_settings

    if not (stack_dir / STACK_FILE).is_file():
        return None  # no stack running: `v2c stack up` registers it from pki/vehicles
    try:
        done = register_in_stack(read_settings(stack_dir / STACK_FILE), [vin])
    except BrokerAdminError as error:
        raise BrokerAdminError(
            f"issued, but not registered in the stack's broker ({error.detail}); "
            "`v2c stack up` registers it at the next start"
        ) from error
    if done is None:
        return None
    return "new" if done.created else "already registered"
