"""Which package formats the registry accepts (BR-OTA-002), told by name and
by the first bytes.

The PRD's list is `.bin`, `.hex`, `.elf`, `.tar.gz`, `.zip`; `.swu` is added
because the A/B design (spec 002) ships SWUpdate bundles. The extension
decides the format (the HTTP Content-Type is not trusted); where a format has
a signature in its first bytes, those bytes must carry it too, so a renamed
text file or a truncated upload is refused before it is stored. `.bin` is raw
flash content and has no signature to check.

Pure: the callers pass the file name and the first `SNIFF_BYTES` bytes.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

from v2c.contract.errors import InvalidField

SNIFF_BYTES: Final = 16


class FirmwareFormat(StrEnum):
    BIN = "bin"
    HEX = "hex"
    ELF = "elf"
    TAR_GZ = "tar.gz"
    ZIP = "zip"
    SWU = "swu"

    @property
    def extension(self) -> str:
        return f".{self.value}"


# Longest first, so `x.tar.gz` is tar.gz and never a bare `.gz`.
_BY_EXTENSION: Final = sorted(FirmwareFormat, key=lambda f: -len(f.extension))
ALLOWED_TEXT: Final = ", ".join(f.extension for f in FirmwareFormat)

_ZIP_MAGICS: Final = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")  # entry, empty, spanned
_GZIP_MAGIC: Final = b"\x1f\x8b"
_ELF_MAGIC: Final = b"\x7fELF"
_CPIO_NEWC: Final = (b"070701", b"070702")  # SWUpdate accepts newc and crc cpio only
_INTEL_HEX_RECORD: Final = re.compile(rb"\s*:[0-9A-Fa-f]{2}")
_MAX_FILENAME: Final = 255


def clean_filename(filename: str) -> str:
    """The file name without any directory part; `InvalidField` (400) when
    empty, too long, or holding characters unsafe in a Content-Disposition."""
    base = re.split(r"[\\/]", filename.strip())[-1]
    if not base or len(base) > _MAX_FILENAME:
        raise InvalidField("file", f"a file name of 1-{_MAX_FILENAME} characters is required")
    if any(ord(c) < 0x20 or c in '"\x7f' for c in base):
        raise InvalidField("file", f"the file name {base!r} holds a quote or control character")
    return base


def format_from_filename(filename: str) -> FirmwareFormat:
    """The format named by `filename`'s extension (case-insensitive), or
    `InvalidField` (400) naming the allowed formats."""
    base = clean_filename(filename)
    lower = base.lower()
    for fmt in _BY_EXTENSION:
        if lower.endswith(fmt.extension) and len(lower) > len(fmt.extension):
            return fmt
    raise InvalidField(
        "file", f"unsupported firmware format {base!r}: the file name must end in {ALLOWED_TEXT}"
    )


def signature_matches(fmt: FirmwareFormat, head: bytes) -> bool:
    """Whether `head` (the file's first bytes) starts the way `fmt` files start."""
    match fmt:
        case FirmwareFormat.BIN:
            return True
        case FirmwareFormat.ZIP:
            return head.startswith(_ZIP_MAGICS)
        case FirmwareFormat.TAR_GZ:
            return head.startswith(_GZIP_MAGIC)
        case FirmwareFormat.ELF:
            return head.startswith(_ELF_MAGIC)
        case FirmwareFormat.SWU:
            return head.startswith(_CPIO_NEWC)
        case FirmwareFormat.HEX:
            return _INTEL_HEX_RECORD.match(head) is not None


_EXPECTED: Final = {
    FirmwareFormat.ZIP: "a ZIP archive (PK\\x03\\x04)",
    FirmwareFormat.TAR_GZ: "gzip data (1f 8b)",
    FirmwareFormat.ELF: "an ELF image (7f 'ELF')",
    FirmwareFormat.SWU: "an SWUpdate cpio archive ('070701' or '070702')",
    FirmwareFormat.HEX: "an Intel HEX record (':' and hex digits)",
}


def check_signature(fmt: FirmwareFormat, head: bytes) -> None:
    """`InvalidField` (400) when the content does not start like a `fmt` file."""
    if not signature_matches(fmt, head):
        raise InvalidField(
            "file",
            f"the content is not {_EXPECTED.get(fmt, fmt.value)} although the file name "
            f"ends in {fmt.extension}",
        )
