"""`v2c firmware`: the firmware registry through the fleet-manager API (issue #6).

`build` makes a package the vehicle agent installs from a payload file or
directory (`v2c.infra.cli.firmware_package`); `upload` checks its arguments
(SemVer version, names, a file name and content the registry accepts) before
it hashes or sends a byte, and warns on stderr when the file is not such a
package (it still uploads: the registry takes any format it lists).

`upload` streams the file as the body of `POST /api/v1/ota/firmware` (the
local stack's adapter takes any size up to 500 MB; a deployed API, 4 MiB),
or with `--presigned` in two steps: metadata to `POST .../firmware-uploads`, the file
by PUT to the presigned S3 URL it answers (no API credential on that
request), then `POST .../firmware-uploads/{token}/complete`. Either way the file is
read in 1 MiB chunks, never held whole, with a progress bar in bytes/s.
With `--verify` (the default) the file is first hashed the same streamed
way and its SHA-256 sent along, so a transfer that corrupts a byte is
refused (422) instead of registered.

Exit codes, as for every `v2c` command (`v2c.infra.cli.errors`): 0 done;
1 the API failed (5xx) or could not be reached; 2 bad options; 3 the API
refused the request (4xx); 4 no stack.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final

import requests
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from v2c.contract.errors import InvalidInput, ValidationFailed
from v2c.contract.semver import SemVer
from v2c.infra.cli.api_client import (
    UPLOAD_CHUNK,
    ApiError,
    SizedBody,
)
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
from v2c.infra.cli.firmware_package import (
    build as build_package,
)
from v2c.infra.cli.firmware_package import (
    default_name,
    installable_problem,
    upload_problems,
)
from v2c.infra.cli.output import dump, wants_json
from v2c.infra.cli.tables import Column, Kind, fitted_table

app = typer.Typer(
    name="firmware",
    help="Firmware packages: build, upload, list, inspect, deprecate, recall, delete.",
    no_args_is_help=True,
)

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)
BASE: Final = "/api/v1/ota/firmware"
UPLOADS: Final = "/api/v1/ota/firmware-uploads"
PUT_TIMEOUT_S: Final = 60.0

FirmwareId = Annotated[str, typer.Argument(help="Firmware id (32 hex digits).")]
Reason = Annotated[str, typer.Option(help="Why; recorded with the change.")]
Force = Annotated[bool, typer.Option(help="Also while an active campaign uses it.")]


# The one refusal an upload can avoid by another route: the body is over the API's limit.
_HINTS: Final = {413: "upload it with --presigned"}


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover -- the loop always returns


def show_firmware(record: dict[str, Any]) -> None:
    rows: list[tuple[str, str | Text]] = [
        (key, Text(str(record.get(key, ""))))
        for key in ("name", "version", "device_model", "manufacturer", "status")
    ]
    if record.get("status_reason"):
        rows.append(("status reason", Text(record["status_reason"])))
    rows.append(("file", Text(f"{record['filename']} ({_size(record['file_size'])})")))
    rows.append(("sha256", record["checksum_sha256"]))  # folds whole, never cut
    rows.append(("md5", record["checksum_md5"]))
    flags = [f for f in ("is_beta", "is_security_update") if record.get(f)]
    rows.append(("flags", ", ".join(flags) or "-"))
    if record.get("tags"):
        rows.append(("tags", Text(", ".join(record["tags"]))))
    if record.get("hardware_id"):
        rows.append(("hardware id", Text(record["hardware_id"])))
    rows.append(("downloads", str(record.get("download_count", 0))))
    rows.append(("created", Text(f"{record['created_at']} by {record.get('created_by') or '-'}")))
    columns = [Column("field", Kind.FIXED), Column("value")]
    _out.print(fitted_table(columns, rows, title=f"firmware {record['firmware_id']}"))


def _print(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        dump(record)
    else:
        show_firmware(record)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(bar_width=40),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=_err,
    )


def _sha256(path: Path, advance: Callable[[int], None]) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def _put(url: str, path: Path, size: int, advance: Callable[[int], None]) -> None:
    """PUT the file to a presigned URL: plain requests, no API key on it."""
    with path.open("rb") as handle:
        try:
            answer = requests.put(url, data=SizedBody(handle, size, advance), timeout=PUT_TIMEOUT_S)
        except requests.RequestException as exc:
            raise ApiError(0, f"the upload to storage failed: {exc}", "upload_failed") from exc
    if answer.status_code >= 300:
        raise ApiError(
            answer.status_code,
            f"storage refused the upload: {answer.text[:300]}",
            "upload_failed",
        )


@app.command("upload")
def upload(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="The package file to upload."
        ),
    ],
    name: Annotated[str, typer.Option(help="Firmware name.")],
    version: Annotated[str, typer.Option(help="Semantic version, e.g. 2.1.0.")],
    model: Annotated[str, typer.Option("--model", help="The device model it is for.")],
    manufacturer: Annotated[str, typer.Option(help="Manufacturer.", envvar="V2C_MANUFACTURER")],
    hardware_id: Annotated[str, typer.Option(help="Hardware id it is built for.")] = "",
    description: Annotated[str, typer.Option(help="Release notes.")] = "",
    min_installed_version: Annotated[
        str, typer.Option(help="Lowest installed version it may update.")
    ] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag; repeat for more.")] = None,
    metadata: Annotated[str, typer.Option(help="Free-form metadata: a JSON object.")] = "",
    beta: Annotated[bool, typer.Option("--beta", help="Mark as a beta release.")] = False,
    security_update: Annotated[
        bool, typer.Option("--security-update", help="Mark as a security update.")
    ] = False,
    filename: Annotated[
        str | None, typer.Option(help="File name to register; default: FILE's name.")
    ] = None,
    md5: Annotated[str | None, typer.Option(help="MD5 the registry must find.")] = None,
    sha256: Annotated[str | None, typer.Option(help="SHA-256 the registry must find.")] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify", help="Hash the file first and have the registry check it."
        ),
    ] = True,
    presigned: Annotated[
        bool,
        typer.Option(
            "--presigned", help="Two steps through a presigned storage URL (any size, in AWS)."
        ),
    ] = False,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Upload a firmware package; 'created' or 'already registered' on success.

    The arguments are checked before the file is hashed or sent; a file that
    is not a package the vehicle agent installs (`v2c firmware build` makes
    one) uploads with a warning.
    """
    as_json = wants_json(output, as_json)
    size = file.stat().st_size
    problems = upload_problems(
        file,
        filename or file.name,
        version,
        {"--name": name, "--model": model, "--manufacturer": manufacturer},
    )
    if min_installed_version:
        try:
            SemVer.parse(min_installed_version)
        except ValidationFailed as exc:
            problems["--min-installed-version"] = exc.detail
    extra: dict[str, Any] = {}
    try:
        extra = json.loads(metadata) if metadata else {}
    except ValueError as exc:
        problems["--metadata"] = f"not JSON: {exc}"
    if len(problems) == 1:
        ((flag, why),) = problems.items()
        raise typer.BadParameter(why, param_hint=flag)
    if problems:
        detail = "; ".join(f"{flag}: {why}" for flag, why in problems.items())
        raise typer.BadParameter(detail)
    warning = installable_problem(file, version)
    if warning:
        _err.print(Text.assemble(("warning: ", "bold yellow"), warning))
    fields: dict[str, Any] = {
        "name": name,
        "version": version,
        "device_model": model,
        "manufacturer": manufacturer,
        "filename": filename or file.name,
        "description": description,
        "is_beta": beta,
        "is_security_update": security_update,
        "tags": list(tag or []),
        "hardware_id": hardware_id,
        "min_installed_version": min_installed_version,
    }
    with (
        api_client(stack, api_url, api_key, as_role, hints=_HINTS) as client,
        _progress() as progress,
    ):
        if verify and sha256 is None:
            task = progress.add_task("hashing", total=size)
            sha256 = _sha256(file, lambda n: progress.advance(task, n))
        task = progress.add_task("uploading", total=size)
        advance: Callable[[int], None] = lambda n: progress.advance(task, n)  # noqa: E731
        checks = {"checksum_md5": md5, "checksum_sha256": sha256}
        if presigned:
            ticket = client.post(UPLOADS, {**fields, "metadata": extra})
            _put(ticket["upload_url"], file, size, advance)
            body = {k: v for k, v in checks.items() if v is not None}
            record = client.post(ticket["complete_url"], body)
        else:
            params = {
                **fields,
                "is_beta": str(beta).lower(),
                "is_security_update": str(security_update).lower(),
                "metadata": metadata or None,
                **checks,
            }
            with file.open("rb") as handle:
                record = client.upload(BASE, handle, params=params, on_bytes=advance)
    _print(record, as_json)
    if not as_json:
        what = "registered" if record.get("created") else "already registered (identical)"
        _err.print(f"{what}: {record['firmware_id']}")


@app.command("list")
def list_(
    model: Annotated[str | None, typer.Option("--model", help="Only this device model.")] = None,
    manufacturer: Annotated[str | None, typer.Option(help="Only this manufacturer.")] = None,
    status: Annotated[
        str | None, typer.Option(help="available|deprecated|recalled|deleted")
    ] = None,
    beta: Annotated[bool | None, typer.Option("--beta/--no-beta", help="Beta or not.")] = None,
    security_update: Annotated[
        bool | None, typer.Option("--security-update/--no-security-update")
    ] = None,
    include_deleted: Annotated[bool, typer.Option(help="Also deleted packages.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="The next page: the cursor the last page printed.")
    ] = None,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    wide: Wide = False,
    as_json: AsJson = False,
) -> None:
    """List firmware, newest first."""
    params: dict[str, Any] = {
        "device_model": model,
        "manufacturer": manufacturer,
        "status": status,
        "is_beta": None if beta is None else str(beta).lower(),
        "is_security_update": None if security_update is None else str(security_update).lower(),
        "include_deleted": str(include_deleted).lower(),
        "limit": limit,
        "cursor": cursor,
    }
    with api_client(stack, api_url, api_key, as_role, hints=_HINTS) as client:
        page = client.get(BASE, **params)
    if wants_json(output, as_json):
        dump(page)
        return
    columns = [
        Column("firmware", Kind.ID),  # ids are copied from here
        Column("name"),
        Column("version", Kind.ID),
        Column("model", Kind.FIXED),
        Column("status", Kind.FIXED),
        Column("size", Kind.FIXED, drop=2, justify="right"),
        Column("created", Kind.FIXED, drop=1),
    ]
    rows = []
    for f in page["items"]:
        flags = [
            n for n, key in (("beta", "is_beta"), ("security", "is_security_update")) if f[key]
        ]
        rows.append(
            (
                f["firmware_id"],
                Text(f["name"]),
                Text(f["version"]),
                Text(f["device_model"]),
                f["status"] + "".join(f" ({flag})" for flag in flags),
                _size(f["file_size"]),
                f["created_at"][:10],
            )
        )
    _out.print(fitted_table(columns, rows, wide=wide))
    shown = len(page["items"])
    more = f"; next page: --cursor {page['next_cursor']}" if page.get("next_cursor") else ""
    _err.print(f"{shown} of {page['total']}{more}")


@app.command("show")
def show(
    firmware_id: FirmwareId,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Show one package."""
    with api_client(stack, api_url, api_key, as_role, hints=_HINTS) as client:
        _print(client.get(f"{BASE}/{firmware_id}"), wants_json(output, as_json))


@app.command("download-url")
def download_url(
    firmware_id: FirmwareId,
    expires_in: Annotated[
        int, typer.Option(min=1, max=7 * 24 * 3600, help="Seconds the URL stays valid.")
    ] = 3600,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Print a time-limited download URL (the checksums go to stderr)."""
    with api_client(stack, api_url, api_key, as_role, hints=_HINTS) as client:
        answer = client.get(f"{BASE}/{firmware_id}/download", expires_in=expires_in)
    if wants_json(output, as_json):
        dump(answer)
        return
    typer.echo(answer["download_url"])
    _err.print(
        f"{answer['filename']}, {answer['file_size']} bytes, sha256 {answer['checksum_sha256']}, "
        f"expires {answer['expires_at']}"
    )


def _lifecycle(verb: str, help_text: str) -> None:
    def run(
        firmware_id: FirmwareId,
        reason: Reason = "",
        force: Force = False,
        stack: Stack = None,
        api_url: ApiUrl = None,
        api_key: ApiKey = None,
        as_role: AsRole = None,
        output: Output = Format.TABLE,
        as_json: AsJson = False,
    ) -> None:
        with api_client(stack, api_url, api_key, as_role, hints=_HINTS) as client:
            if verb == "delete":
                params = {"reason": reason, "force": str(force).lower()}
                answer = client.request("DELETE", f"{BASE}/{firmware_id}", params=params)
            else:
                body = {"reason": reason, "force": force}
                answer = client.post(f"{BASE}/{firmware_id}/{verb}", body)
        _print(answer, wants_json(output, as_json))

    run.__doc__ = help_text
    app.command(verb)(run)


for _verb, _help in (
    ("deprecate", "Deprecate a package: not for new deployments, still downloadable."),
    ("recall", "Recall a package: neither deployable nor downloadable."),
    ("delete", "Delete a package (soft: kept for audit; reads answer 404)."),
):
    _lifecycle(_verb, _help)


@app.command("build")
def build(
    payload: Annotated[
        Path,
        typer.Argument(
            exists=True, readable=True, help="The image: a file, or a directory to pack."
        ),
    ],
    version: Annotated[str, typer.Option(help="Semantic version it installs, e.g. 2.1.0.")],
    model: Annotated[str, typer.Option("--model", help="The device model it is for.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write it. Default ./<model>-<version>.bin."),
    ] = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Build a package the vehicle agent installs (sw-description + image),
    ready for `v2c firmware upload`."""
    try:
        SemVer.parse(version)
    except ValidationFailed as exc:
        raise typer.BadParameter(exc.detail, param_hint="--version") from exc
    if not model.strip():
        raise typer.BadParameter("must not be empty", param_hint="--model")
    target = out or Path(default_name(model, version))
    try:
        built = build_package(payload, version, model, target)
    except InvalidInput as exc:  # a link or a device file in the tree
        raise typer.BadParameter(exc.detail, param_hint="PAYLOAD") from exc
    if wants_json(output, as_json):
        dump(built.to_json())
        return
    rows: list[tuple[str, str | Text]] = [
        ("package", Text(str(built.path))),
        ("version", Text(built.version)),
        ("model", Text(built.model)),
        ("image", _size(built.image_bytes)),
        ("package size", _size(built.package_bytes)),
        ("sha256", built.sha256),
    ]
    columns = [Column("field", Kind.FIXED), Column("value")]
    _out.print(fitted_table(columns, rows, title="firmware package"))
    _err.print(
        Text(
            f"next: v2c firmware upload {built.path} --name NAME --version {built.version} "
            f"--model {built.model} --manufacturer MAKER"
        )
    )
