"""The PRD's firmware upload: `multipart/form-data` with a `metadata` JSON part and a `file` part.

    curl -F 'metadata={"name":"…","version":"2.1.0","device_model":"SF-100",
                       "manufacturer":"Acme"}' -F 'file=@firmware_v2.1.0.bin' …/firmware

is taken beside the raw upload (`firmware_models`), on the same path, with
the same rules and answers: the form's `metadata` is the two-step upload's
JSON (`UploadRequest`; `filename` defaults to the file part's own, and
`checksum_md5` / `checksum_sha256` may ride along, or come as parts of
their own), validated by the same model; the file goes through the same
`FirmwareService.upload`, which hashes it, enforces the size cap while
reading (BR-OTA-001) and verifies the checksums (422) before anything is
stored.

The form is read as a stream (`FormReader`), never parsed whole: the
small parts before the file are read within `MAX_FIELD_BYTES` each, and the
file part is handed to the registry as a stream that ends at the next
boundary, so memory is one read chunk whatever the package size; the local
adapter streams a 500 MB form as it streams a raw body. The stdlib `email`
parser would need the whole message in memory first, so it is used only to
read each part's headers. Rules of the stream:

* the text parts (`metadata`, optional `checksum_*`) come before `file`,
  and `file` is the last part: the package is stored as it arrives, so
  whatever must be checked first has to be known first;
* the closing boundary must follow the file: a body that ends inside the
  file (a cut connection), or another part after it, is a 400 raised from
  the stream itself, so the registry aborts and stores nothing;
* anything malformed (no boundary, unknown or repeated parts, a part
  without a name, headers over `MAX_HEAD_BYTES`) is a 400 with a JSON
  `detail`, as every refusal of the API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from email.policy import HTTP
from typing import Any, Final

from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from pydantic import ValidationError

from v2c.contract.errors import InvalidInput, PayloadTooLarge
from v2c.handlers.api import json_limits
from v2c.handlers.api.firmware_models import (
    Filename,
    Md5,
    Sha256,
    UploadRequest,
)
from v2c.handlers.ota.firmware.ingest import Readable
from v2c.handlers.ota.firmware.model import MAX_METADATA_JSON
from v2c.handlers.ota.firmware.service import FirmwareService
from v2c.handlers.ota.firmware.uploads import UploadResult

FORM_CONTENT_TYPE: Final = "multipart/form-data"
MAX_HEAD_BYTES: Final = 16 * 1024  # a part's headers; also the preamble's limit
MAX_FIELD_BYTES: Final = MAX_METADATA_JSON + 16 * 1024  # one text part
FORM_OVERHEAD: Final = 64 * 1024  # what a form adds to its file: the text parts, headers
READ_CHUNK: Final = 64 * 1024
TEXT_PARTS: Final = ("metadata", "checksum_md5", "checksum_sha256")
FILE_PART: Final = "file"
_BOUNDARY: Final = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")  # RFC 2046 bchars


class MalformedForm(InvalidInput):
    """The body is not the multipart form it says it is."""

    reason = "malformed_multipart"


class FormMetadata(UploadRequest):
    """The form's `metadata` part: the two-step upload's JSON, the file
    name optional (the file part's by default), checksums to verify."""

    filename: Filename | None = None  # type: ignore[assignment]
    checksum_md5: Md5 | None = None
    checksum_sha256: Sha256 | None = None

    def firmware_metadata(self) -> dict[str, Any]:
        return self.model_dump(exclude={"filename", "checksum_md5", "checksum_sha256"})


def is_form(content_type: str | None) -> bool:
    """Whether a `Content-Type` is `multipart/form-data` (any parameters)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == FORM_CONTENT_TYPE


def form_boundary(content_type: str) -> bytes:
    """The boundary of a `multipart/form-data` type; `MalformedForm` without one."""
    parser = HeaderParser(policy=HTTP)
    header = parser.parsestr(f"Content-Type: {content_type}\r\n\r\n")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not _BOUNDARY.fullmatch(boundary):
        raise MalformedForm("multipart/form-data needs a boundary of 1 to 70 plain characters")
    return boundary.encode("ascii")


@dataclass(frozen=True, slots=True)
class PartHead:
    name: str
    filename: str | None


class FormReader:
    """A `multipart/form-data` body read part by part from a stream.

    Every part is delimited by CRLF `--boundary`; the body is read as if it
    began with a CRLF, so the first delimiter needs no special case."""

    def __init__(self, stream: Readable, boundary: bytes) -> None:
        self._stream = stream
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray(b"\r\n")
        self._eof = False
        self._in_part = False
        self._finished = False

    def _more(self) -> None:
        if self._eof:
            raise MalformedForm("the body ends before the form's closing boundary")
        chunk = self._stream.read(READ_CHUNK)
        if chunk:
            self._buffer += chunk
        else:
            self._eof = True

    def _need(self, count: int) -> None:
        while len(self._buffer) < count:
            self._more()

    def next_part(self) -> PartHead | None:
        """The next part's name and file name (its body follows through
        `read`), or None after the closing boundary."""
        if self._finished:
            return None
        if self._in_part:
            raise MalformedForm("a part was not read to its end")  # a caller's bug
        while (found := self._buffer.find(self._delimiter)) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise MalformedForm("no form boundary where the form should begin")
            self._more()
        del self._buffer[: found + len(self._delimiter)]
        self._need(2)
        if self._buffer[:2] == b"--":
            self._finished = True
            return None
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise MalformedForm(f"a part's headers exceed {MAX_HEAD_BYTES} bytes")
            self._more()
        raw, rest = bytes(self._buffer[:end]), self._buffer[end + 4 :]
        self._buffer = bytearray(rest)
        first, _, headers = raw.partition(b"\r\n")
        if first.strip(b" \t"):
            raise MalformedForm("text after a boundary line")
        self._in_part = True
        return _part_head(headers)

    def read(self, size: int = -1, /) -> bytes:
        """The current part's next bytes; b"" at its end."""
        if not self._in_part:
            return b""
        want = size if size > 0 else READ_CHUNK
        keep = len(self._delimiter) - 1  # may be the start of a delimiter
        while True:
            found = self._buffer.find(self._delimiter)
            if found >= 0:
                count = min(found, want)
                data = bytes(self._buffer[:count])
                del self._buffer[:count]
                if count == found:
                    self._in_part = False
                return data
            safe = len(self._buffer) - keep
            if safe > 0:
                count = min(safe, want)
                data = bytes(self._buffer[:count])
                del self._buffer[:count]
                return data
            self._more()

    def read_field(self, name: str) -> str:
        """The current part read whole as UTF-8 text, within `MAX_FIELD_BYTES`."""
        data = bytearray()
        while chunk := self.read(READ_CHUNK):
            data += chunk
            if len(data) > MAX_FIELD_BYTES:
                raise MalformedForm(f"the form part {name!r} exceeds {MAX_FIELD_BYTES} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedForm(f"the form part {name!r} is not UTF-8 text") from None


def _part_head(headers: bytes) -> PartHead:
    try:
        text = headers.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedForm("a part's headers are not UTF-8") from None
    message = HeaderParser(policy=HTTP).parsestr(text + "\r\n\r\n")
    if message.get_content_disposition() != "form-data":
        raise MalformedForm("every part needs Content-Disposition: form-data")
    name = message.get_param("name", header="content-disposition")
    if not isinstance(name, str) or not name:
        raise MalformedForm("a form part without a name")
    filename = message.get_filename()
    return PartHead(name, filename)


class _LastPart:
    """The file part as the registry reads it: ends at its boundary, which
    must be the closing one (checked before the registry sees the end)."""

    def __init__(self, form: FormReader, cap: int | None) -> None:
        self._form = form
        self._cap = cap
        self._size = 0

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:  # the rest of the part, as `read()` of a file means
            return b"".join(iter(lambda: self.read(READ_CHUNK), b""))
        data = self._form.read(size)
        self._size += len(data)
        if self._cap is not None and self._size > self._cap:
            raise PayloadTooLarge(
                f"a package over {self._cap} bytes cannot pass through the API's request: "
                "use the two-step presigned upload (POST /api/v1/ota/firmware-uploads)"
            )
        if not data and self._form.next_part() is not None:
            raise MalformedForm(f"the {FILE_PART!r} part must be the form's last")
        return data


def _validated(text: str, fields: Mapping[str, str], file_name: str | None) -> FormMetadata:
    try:
        data = json_limits.loads(text, what="metadata")
    except ValueError as exc:
        raise MalformedForm(f"metadata: must be a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedForm("metadata: must be a JSON object")
    for name, value in fields.items():
        if name in data and data[name] != value:
            raise MalformedForm(f"{name} is given twice, with two values")
        data[name] = value
    if "filename" not in data and file_name:
        data["filename"] = re.split(r"[\\/]", file_name)[-1]
    try:
        return FormMetadata.model_validate(data)
    except ValidationError as error:
        errors = [
            {**e, "loc": ("body", "metadata", *e["loc"])} for e in error.errors(include_input=False)
        ]
        raise RequestValidationError(errors) from None


def upload_form(
    service: FirmwareService,
    stream: Readable,
    content_type: str,
    uploaded_by: str,
    *,
    file_cap: int | None = None,
) -> UploadResult:
    """Read a form upload from `stream` and register its package. Raises
    `MalformedForm` (400), `RequestValidationError` (400, the metadata's
    fields), `PayloadTooLarge` (413, over `file_cap`: the Lambda form's
    limit) or whatever `FirmwareService.upload` raises, with nothing stored."""
    form = FormReader(stream, form_boundary(content_type))
    metadata: str | None = None
    fields: dict[str, str] = {}
    while (head := form.next_part()) is not None:
        if head.name == FILE_PART:
            break
        if head.name not in TEXT_PARTS:
            raise MalformedForm(
                f"unknown form part {head.name[:64]!r}: send metadata, then file"
                " (checksum_md5 and checksum_sha256 may come between)"
            )
        if (head.name == "metadata" and metadata is not None) or head.name in fields:
            raise MalformedForm(f"the form part {head.name!r} is given twice")
        value = form.read_field(head.name)
        if head.name == "metadata":
            metadata = value
        else:
            fields[head.name] = value.strip()
    else:
        raise MalformedForm(f"the form has no {FILE_PART!r} part")
    if metadata is None:
        raise MalformedForm("the 'metadata' part must come before the 'file' part")
    request = _validated(metadata, fields, head.filename)
    if request.filename is None:
        raise MalformedForm("the file part has no filename; give one in metadata.filename")
    return service.upload(
        _LastPart(form, file_cap),
        request.firmware_metadata(),
        filename=request.filename,
        provided_md5=request.checksum_md5,
        provided_sha256=request.checksum_sha256,
        uploaded_by=uploaded_by,
    )
