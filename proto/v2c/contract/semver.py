"""Semantic versions (SemVer 2.0.0) with their precedence rules.

Firmware versions decide two things that must not be approximated: whether a
campaign's version is well formed, and which vehicles a filter such as
`installed_version < '2.4.0'` selects. Comparing version strings as text gets
the second wrong (`'2.10.0' < '2.9.0'` as text), so versions are parsed once
into `SemVer` and compared by the precedence rules of semver.org §11:
numeric core first, a pre-release below its release, build metadata ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from v2c.contract.errors import ValidationFailed

# A sanity cap before the regular expression runs; business rules (BR-OTA-006:
# 1-50 characters) are stricter and are checked by their callers.
MAX_VERSION_LENGTH: Final = 256

_NUMERIC = r"0|[1-9]\d*"
_PRE_ID = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
SEMVER_PATTERN: Final = re.compile(
    rf"(?P<major>{_NUMERIC})\.(?P<minor>{_NUMERIC})\.(?P<patch>{_NUMERIC})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?"
    rf"(?:\+(?P<build>{_BUILD_ID}(?:\.{_BUILD_ID})*))?",
    re.ASCII,
)

PreId = int | str
_PreKey = tuple[tuple[int, int, str], ...]


def _pre_identifier(text: str) -> PreId:
    return int(text) if text.isdigit() else text


@dataclass(frozen=True, slots=True, eq=False)
class SemVer:
    """A parsed version. Equality and hashing follow precedence (build ignored),
    so `1.0.0+a == 1.0.0+b`, as semver.org says they have the same precedence."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[PreId, ...] = ()
    build: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SemVer:
        """Parse `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`; no `v` prefix, no padding."""
        if len(text) > MAX_VERSION_LENGTH:
            raise ValidationFailed(f"version is longer than {MAX_VERSION_LENGTH} characters")
        match = SEMVER_PATTERN.fullmatch(text)
        if match is None:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise ValidationFailed(
                f"invalid version {shown!r}: expected a semantic version such as 2.4.1 "
                "(MAJOR.MINOR.PATCH, no leading zeros, optional -prerelease and +build)"
            )
        pre = match["pre"]
        build = match["build"]
        return cls(
            major=int(match["major"]),
            minor=int(match["minor"]),
            patch=int(match["patch"]),
            prerelease=tuple(_pre_identifier(p) for p in pre.split(".")) if pre else (),
            build=tuple(build.split(".")) if build else (),
        )

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def _key(self) -> tuple[int, int, int, int, _PreKey]:
        # A release (no pre-release) sorts after every pre-release of the same core;
        # numeric identifiers sort before alphanumeric ones (semver.org §11.4).
        pre: _PreKey = tuple(
            (0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.prerelease
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: SemVer) -> bool:
        return self._key() < other._key()

    def __le__(self, other: SemVer) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: SemVer) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: SemVer) -> bool:
        return self._key() >= other._key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(p) for p in self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


def is_semver(text: str) -> bool:
    """True if `text` parses as a semantic version."""
    return len(text) <= MAX_VERSION_LENGTH and SEMVER_PATTERN.fullmatch(text) is not None
