"""The dashboard's files by name, with the media type each is served as.

Only the names in `ASSETS` (and `PAGE`) can be read: a request names a file
by a path parameter, and a lookup in a fixed table leaves no way to climb
out of the folder or to serve this module's own source. The files are read
once per process (a Lambda container, the local API) and kept: they are
small and change only with a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final

PACKAGE: Final = "v2c.handlers.dashboard"
PAGE: Final = "index.html"
HTML: Final = "text/html; charset=utf-8"
ASSETS: Final[dict[str, str]] = {
    "app.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
"""Asset file name -> Content-Type."""


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    content_type: str
    text: str


@cache
def _read(name: str) -> str:
    return resources.files(PACKAGE).joinpath(name).read_text("utf-8")


def page() -> Asset:
    """The dashboard's one HTML document."""
    return Asset(PAGE, HTML, _read(PAGE))


def asset(name: str) -> Asset | None:
    """The asset called `name`, or None when there is none by that name."""
    content_type = ASSETS.get(name)
    if content_type is None:
        return None
    return Asset(name, content_type, _read(name))
