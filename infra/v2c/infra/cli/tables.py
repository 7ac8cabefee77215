"""The one table every `v2c` command prints: identifiers whole at any width.

A fleet manager copies ids out of tables (a campaign id into `campaign
watch`, a firmware id into `campaign create`), and reads versions; a cut
"88c2c8388d…" or "2.1…" is useless. So each column says what it holds:

* `Kind.ID`: ids and versions, never wrapped or shortened; the column is as
  wide as its longest value;
* `Kind.FIXED`: short values (a status, a count, a date) kept on one line;
* `Kind.TEXT`: free text (a name, a reason) that folds onto more lines.

Nothing is ever cut with an ellipsis. When the ids and fixed values do not
fit the terminal beside a little room for the text, the columns marked
droppable (`drop > 0`, highest first) are left out and the caption names
them; `--wide` keeps every column. `fit` decides which columns stay and is
pure (widths in, indices out), so it is tested without a terminal.

When even the columns that cannot be dropped are wider than the terminal
(three 32-character ids side by side at 80 columns), a row no longer fits on
a line: each row is then printed as a block of `field  value` lines
(`field_value_table`, as `kubectl describe` does), where an id has the whole
width beside its label, so no line is wider than the terminal and every id
is still whole. Labels fold before an id does (`value_widths`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

TEXT_MIN: Final = 8  # the least a folding text column is given before columns are dropped
GAP: Final = 2  # between two columns (SIMPLE_HEAD, no edge, collapsed padding)


class Kind(StrEnum):
    ID = "id"
    FIXED = "fixed"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    kind: Kind = Kind.TEXT
    drop: int = 0  # 0: always shown; else dropped at narrow widths, the highest first
    justify: JustifyMethod = "left"


Cell = str | Text


def _width(cell: Cell) -> int:
    text = cell if isinstance(cell, Text) else Text(cell)
    return max((line.cell_len for line in text.split()), default=0)


def natural_widths(columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> list[int]:
    """Each column's width with nothing folded: its longest value or header."""
    widths = [len(c.header) for c in columns]
    for row in rows:
        for n, cell in enumerate(row):
            widths[n] = max(widths[n], _width(cell))
    return widths


def needed(columns: Sequence[Column], widths: Sequence[int], kept: Sequence[int]) -> int:
    """The narrowest the kept columns can be without cutting or folding an id."""
    total = sum(
        min(widths[n], TEXT_MIN) if columns[n].kind is Kind.TEXT else widths[n] for n in kept
    )
    return total + GAP * max(0, len(kept) - 1)


def fit(columns: Sequence[Column], widths: Sequence[int], width: int, wide: bool) -> list[int]:
    """The indices of the columns shown at `width`: all with `wide`, else the
    droppable ones left out, highest `drop` first (the rightmost on a tie),
    until the rest fits."""
    kept = list(range(len(columns)))
    if wide:
        return kept
    while needed(columns, widths, kept) > width:
        droppable = [n for n in kept if columns[n].drop > 0]
        if not droppable:
            break
        kept.remove(max(droppable, key=lambda n: (columns[n].drop, n)))
    return kept


def value_widths(labels: int, values: int, whole: int, width: int) -> tuple[int, int] | None:
    """The (label, value) column widths of a `field  value` table `width`
    wide: None when both fit as they are; else the value column gets what its
    widest whole value (an id, a hash) needs, or more when there is room, and
    the label column what is left (at least 1: it folds). Pure, so tested
    without a terminal."""
    if labels + GAP + values <= width:
        return None
    value = min(max(whole, width - GAP - labels), max(1, width - GAP - 1))
    return max(1, width - GAP - value), value


def field_value_table(
    blocks: Sequence[Sequence[tuple[str, Cell, bool]]],
    *,
    width: int,
    title: str | None = None,
) -> Table:
    """`label  value` rows at most `width` wide, blocks (one per record)
    apart by an empty line; a value marked whole (an id, a version, a hash)
    is never folded while the terminal is at least as wide as it and a
    1-column label, free text folds."""
    pairs = [pair for block in blocks for pair in block]
    labels = max((_width(label) for label, _, _ in pairs), default=0)
    values = max((_width(value) for _, value, _ in pairs), default=0)
    whole = max((_width(value) for _, value, keep in pairs if keep), default=0)
    sizes = value_widths(labels, values, whole, width)
    table = Table(
        title=title,
        title_justify="left",
        box=None,
        show_header=False,
        show_edge=False,
        pad_edge=False,
        padding=(0, GAP // 2),  # no box: the two paddings are the gap
    )
    label_width, value_width = (None, None) if sizes is None else sizes
    table.add_column("field", overflow="fold", style="bold", width=label_width)
    table.add_column("value", overflow="fold", width=value_width)
    for n, block in enumerate(blocks):
        if n:
            table.add_row("", "")
        for label, value, _ in block:
            table.add_row(Text(label), value)
    return table


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    title: str | None = None,
    wide: bool = False,
    width: int | None = None,
) -> Table:
    """A table of `rows` that fits `width` (default: the terminal's, or
    `COLUMNS`) with every id whole; the caption names the columns left out.
    When the columns that stay are still too wide, one `field  value` block
    per row instead (`field_value_table`), so no line is wider than `width`."""
    widths = natural_widths(columns, rows)
    width = width or Console().width
    kept = fit(columns, widths, width, wide)
    if not wide and needed(columns, widths, kept) > width:
        blocks = [
            [
                (c.header, cell, c.kind is not Kind.TEXT)
                for c, cell in zip(columns, row, strict=True)
            ]
            for row in rows
        ]
        return field_value_table(blocks, width=width, title=title)
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        caption_justify="left",
    )
    for n in kept:
        column = columns[n]
        if column.kind is Kind.TEXT:
            table.add_column(column.header, overflow="fold", justify=column.justify)
        else:  # fold, not "…", even on a terminal narrower than one id
            table.add_column(
                column.header,
                no_wrap=True,
                overflow="fold",
                min_width=widths[n],
                justify=column.justify,
            )
    for row in rows:
        table.add_row(*(row[n] for n in kept))
    left_out = [columns[n].header for n in range(len(columns)) if n not in kept]
    if left_out:
        table.caption = f"not shown at this width: {', '.join(left_out)} (--wide shows them)"
    return table
