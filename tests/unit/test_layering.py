"""The folder contract of `docs/architecture.md`, checked on every run.

Every module under the five source folders is parsed and every import is
collected, the ones inside functions and `TYPE_CHECKING` blocks included:
a lazy import is still an edge a newcomer has to know about. The rules are
data (`FORBIDDEN`, `FORBIDDEN_LIBRARIES`), and `docs/architecture.md` shows the
same table; `test_the_architecture_doc_states_the_same_rules` keeps the two
in step.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("proto", "handlers", "gateway", "infra", "vehicle_sim")

# importer prefix -> import prefixes it must not reach. The longest matching
# importer prefix's rules apply together with every shorter one's.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # The wire contract stands alone: both sides of the wire import it.
    "v2c.contract": ("v2c.handlers", "v2c.gateway", "v2c.infra", "v2c.vehicle_sim"),
    "v2c.v1": ("v2c.contract", "v2c.handlers", "v2c.gateway", "v2c.infra", "v2c.vehicle_sim"),
    # Handlers run as Lambda functions: no local runtime, no tools, no vehicle.
    "v2c.handlers": ("v2c.gateway", "v2c.infra", "v2c.vehicle_sim"),
    # The gateway stands in for IoT Core: it hosts handlers, never the tools.
    "v2c.gateway": ("v2c.infra", "v2c.vehicle_sim"),
    # The vehicle shares the contract with the cloud and nothing else.
    "v2c.vehicle_sim": ("v2c.handlers", "v2c.gateway", "v2c.infra"),
    # The campaign and update rules are pure: values in, decisions out.
    "v2c.handlers.ota.domain": (
        "v2c.handlers.ota.campaigns",
        "v2c.handlers.ota.updates",
        "v2c.handlers.ota.config",
        "v2c.handlers.api",
    ),
    # infra's wings, bottom to top: the stack description (names, settings,
    # net, device_policy), then pki and tools, aws, local, bench, cli.
    "v2c.infra.names": (
        "v2c.infra.settings",
        "v2c.infra.local",
        "v2c.infra.aws",
        "v2c.infra.pki",
        "v2c.infra.cli",
        "v2c.infra.bench",
        "v2c.infra.tools",
    ),
    "v2c.infra.settings": (
        "v2c.infra.local",
        "v2c.infra.aws",
        "v2c.infra.pki",
        "v2c.infra.cli",
        "v2c.infra.bench",
        "v2c.infra.tools",
    ),
    "v2c.infra.device_policy": (
        "v2c.infra.local",
        "v2c.infra.aws",
        "v2c.infra.cli",
        "v2c.infra.bench",
        "v2c.infra.tools",
    ),
    "v2c.infra.pki": (
        "v2c.infra.local",
        "v2c.infra.aws",
        "v2c.infra.cli",
        "v2c.infra.bench",
        "v2c.infra.tools",
    ),
    "v2c.infra.tools": ("v2c.infra.local", "v2c.infra.aws", "v2c.infra.cli", "v2c.infra.bench"),
    "v2c.infra.aws": ("v2c.infra.local", "v2c.infra.cli", "v2c.infra.bench", "v2c.infra.tools"),
    "v2c.infra.local": ("v2c.infra.cli", "v2c.infra.bench"),
    "v2c.infra.bench": ("v2c.infra.cli",),
}

# importer prefix -> third-party or stdlib modules that mean I/O or a clock.
IO_LIBRARIES = (
    "boto3",
    "botocore",
    "paho.mqtt.client",
    "gmqtt",
    "socket",
    "urllib",
    "http",
    "requests",
    "asyncio",
    "threading",
)
FORBIDDEN_LIBRARIES: dict[str, tuple[str, ...]] = {
    "v2c.contract": IO_LIBRARIES,
    "v2c.handlers.ota.domain": (*IO_LIBRARIES, "time"),
    # The update agent decides; the device (download, flash, runtime) acts.
    "v2c.vehicle_sim.ota.agent": (
        "boto3",
        "paho.mqtt.client",
        "gmqtt",
        "socket",
        "ssl",
        "urllib",
        "http",
        "aiohttp",
        "asyncio",
        "threading",
    ),
}

# (importer module, forbidden prefix) pairs still being removed by the change
# that introduces this test; the set must end empty
# (`test_no_known_exceptions_are_left`). Remove your row when you fix it.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    path: str
    line: int


def module_name(path: Path, folder: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every module `source` imports, with relative imports resolved."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def edges(root: Path = ROOT) -> Iterator[Edge]:
    for folder_name in SOURCE_FOLDERS:
        folder = root / folder_name
        for path in sorted(folder.rglob("*.py")):
            if path.name.endswith("_pb2.py") or "__pycache__" in path.parts:
                continue
            module = module_name(path, folder)
            source = path.read_text(encoding="utf-8")
            for imported, line in imports_of(source, module, is_package=path.name == "__init__.py"):
                yield Edge(module, imported, str(path.relative_to(root)), line)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violation(edge: Edge) -> tuple[str, str] | None:
    """The forbidden prefix `edge` reaches and the rule it breaks, or None."""
    for importer, banned in FORBIDDEN.items():
        if _within(edge.importer, importer):
            for target in banned:
                if _within(edge.imported, target):
                    return target, f"`{importer}` must not import `{target}`"
    for importer, libraries in FORBIDDEN_LIBRARIES.items():
        if _within(edge.importer, importer):
            for library in libraries:
                if _within(edge.imported, library):
                    return library, f"`{importer}` is pure and must not import `{library}`"
    return None


def violations(root: Path = ROOT) -> list[str]:
    """One line per import statement that breaks a rule (`from a import b, c` is one)."""
    found = set()
    for edge in edges(root):
        broken = violation(edge)
        if broken is not None and (edge.importer, broken[0]) not in KNOWN_EXCEPTIONS:
            found.add(f"{edge.path}:{edge.line}: {edge.importer}: {broken[1]}")
    return sorted(found)


def test_no_module_crosses_a_forbidden_folder_edge() -> None:
    found = violations()
    assert found == [], "\n".join(found)


def test_no_known_exceptions_are_left() -> None:
    assert not KNOWN_EXCEPTIONS


@pytest.mark.parametrize(
    ("folder", "module", "source", "rule"),
    [
        # a lazy import inside a function is still an edge
        (
            "handlers",
            "v2c/handlers/ota/notifier.py",
            "def f():\n    from v2c.gateway.publisher import OutboundPublisher\n",
            "`v2c.handlers` must not import `v2c.gateway`",
        ),
        (
            "vehicle_sim",
            "v2c/vehicle_sim/ota/checks.py",
            "import v2c.handlers.ota.fleet\n",
            "`v2c.vehicle_sim` must not import `v2c.handlers`",
        ),
        # a relative import resolves to its absolute target
        (
            "handlers",
            "v2c/handlers/ota/domain/rollout.py",
            "from ..campaigns import service\n",
            "`v2c.handlers.ota.domain` must not import `v2c.handlers.ota.campaigns`",
        ),
        (
            "proto",
            "v2c/contract/topics.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import boto3\n",
            "`v2c.contract` is pure and must not import `boto3`",
        ),
        # the update agent's core decides; the event loop is the device's
        (
            "vehicle_sim",
            "v2c/vehicle_sim/ota/agent/offer.py",
            "import asyncio\n",
            "`v2c.vehicle_sim.ota.agent` is pure and must not import `asyncio`",
        ),
    ],
)
def test_a_forbidden_import_is_reported(
    tmp_path: Path, folder: str, module: str, source: str, rule: str
) -> None:
    path = tmp_path / folder / module
    path.parent.mkdir(parents=True)
    path.write_text(source, encoding="utf-8")
    found = violations(tmp_path)
    assert len(found) == 1, found
    assert rule in found[0]


def test_an_allowed_import_is_not_reported(tmp_path: Path) -> None:
    path = tmp_path / "infra" / "v2c" / "infra" / "wiring.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        "from v2c.handlers.dlq.store import DeadLetterStore\nimport v2c.gateway\n", "utf-8"
    )
    assert violations(tmp_path) == []


def test_the_architecture_doc_states_the_same_rules() -> None:
    """Each forbidden folder edge appears in the doc's table as `importer` -> `target`."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- layering:begin -->(.*?)<!-- layering:end -->", doc, re.S)
    assert table is not None, "docs/architecture.md lost its layering table markers"
    stated = {
        (row.group(1), target.strip("` "))
        for row in re.finditer(r"^\| `([\w.]+)` \|[^|]*\| ([^|]*)\|", table.group(1), re.M)
        for target in row.group(2).split(",")
        if target.strip("` ")
    }
    expected = {(importer, target) for importer, banned in FORBIDDEN.items() for target in banned}
    expected |= {
        (importer, library)
        for importer, libraries in FORBIDDEN_LIBRARIES.items()
        for library in libraries
    }
    assert stated == expected
