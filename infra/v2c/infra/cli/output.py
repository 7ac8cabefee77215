"""How every `v2c` command prints what it read or changed: `--output table|json`.

One option (`--output`, `-o`) on every read and write command, so a script
asks for JSON the same way everywhere (kubectl's `-o json`); `table` is for
people and fits the terminal (`v2c.infra.cli.tables`). The old `--json` flag
stays as a hidden alias where it existed, so scripts written against it keep
working. JSON goes to stdout alone: progress, hints and warnings go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from v2c.infra.cli.tables import field_value_table


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"


Output = Annotated[
    Format,
    typer.Option(
        "--output",
        "-o",
        help="table (for people) or json (for scripts).",
        case_sensitive=False,
        show_default=False,
    ),
]
# Deprecated: kept so scripts that pass `--json` do not break; not in --help.
AsJson = Annotated[bool, typer.Option("--json", hidden=True, help="Same as --output json.")]
Wide = Annotated[
    bool, typer.Option("--wide", help="Every column, even when the terminal is narrow.")
]


def wants_json(output: Format, as_json: bool = False) -> bool:
    """JSON when `-o json` or the deprecated `--json` asked for it."""
    return as_json or output is Format.JSON


def dump(answer: Any) -> None:
    """The answer as indented JSON on stdout, nothing else there."""
    sys.stdout.write(json.dumps(answer, indent=2) + "\n")


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list)


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    """Rows of `field value`: nested objects as dotted fields, a small
    object of plain values (a set of counters) on one row."""
    if isinstance(value, Mapping):
        if not value:
            return [(prefix, "-")]
        if prefix and all(_is_scalar(v) for v in value.values()):
            return [(prefix, "  ".join(f"{k} {_scalar(v)}" for k, v in value.items()))]
        rows: list[tuple[str, str]] = []
        for key, inner in value.items():
            rows.extend(_flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return rows
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) for v in value):
            rows = []
            for n, inner in enumerate(value):
                label = inner.get("name", n)
                rest = {k: v for k, v in inner.items() if k != "name"}
                rows.extend(_flatten(f"{prefix}[{label}]", rest))
            return rows
        return [(prefix, ", ".join(str(v) for v in value) or "-")]
    return [(prefix, _scalar(value))]


def _id_like(value: str) -> bool:
    """One word (an id, a hash, a version, a date): folding it would make it
    uncopyable; a value with spaces (counters, a reason) folds between words."""
    return bool(value) and not any(c.isspace() for c in value)


def key_value_table(
    answer: Mapping[str, Any], *, title: str | None = None, width: int | None = None
) -> Table:
    """Any JSON object as `field  value` rows (nested objects as dotted
    fields): the table form of answers with no table of their own (`stats`,
    `device update`). An id-like value (a 64-character checksum beside a long
    dotted field) is kept on one line: the field's label folds instead."""
    rows = [(key, Text(value), _id_like(value)) for key, value in _flatten("", answer)]
    return field_value_table([rows], width=width or Console().width, title=title)


def show(answer: Any, output: Format, as_json: bool, console: Console, title: str = "") -> None:
    """JSON, or the key/value table of an answer with no table of its own."""
    if wants_json(output, as_json) or not isinstance(answer, Mapping):
        dump(answer)
    else:
        console.print(key_value_table(answer, title=title or None, width=console.width))
