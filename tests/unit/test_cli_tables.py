"""The shared table at 80 columns: ids and versions whole, low-value columns left out first.

The audit found `firmware list` at 80 columns showing "acc… │ 2.1… │ Acc…" and
`campaign list` cutting the campaign id to "88c2c8388d…". `fit` is pure
(widths in, kept columns out); the rendering is checked on a Rich console of
a fixed width, with no terminal.
"""

from __future__ import annotations

import io

from rich.console import Console

from v2c.infra.cli.tables import Column, Kind, fit, fitted_table, needed, value_widths

IDS = ["88c2c8388d" * 3 + "ab", "a1c7" * 8]
COLUMNS = [
    Column("campaign", Kind.ID),
    Column("name"),
    Column("status", Kind.FIXED),
    Column("version", Kind.ID, drop=2),
    Column("strategy", Kind.FIXED, drop=3),
    Column("done", Kind.FIXED, justify="right"),
    Column("failed", Kind.FIXED, drop=1, justify="right"),
]
ROWS = [
    (IDS[0], "accord-canary-campaign-with-a-long-name", "in_progress", "10.20.300-rc.4",
     "blue_green", "150/200", "3"),
    (IDS[1], "civic", "rolled_back", "2.0.0", "canary", "2/2", "0"),
]  # fmt: skip


def render(width: int, wide: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    console.print(fitted_table(COLUMNS, ROWS, wide=wide, width=width))
    return out.getvalue()


def test_the_highest_drop_goes_first_until_the_rest_fits() -> None:
    widths = [32, 39, 11, 14, 10, 7, 6]
    assert fit(COLUMNS, widths, 200, wide=False) == [0, 1, 2, 3, 4, 5, 6]
    kept = fit(COLUMNS, widths, 80, wide=False)
    assert kept == [0, 1, 2, 5, 6]  # strategy (3), then version (2) went; failed (1) stayed
    assert needed(COLUMNS, widths, kept) <= 80
    assert fit(COLUMNS, widths, 80, wide=True) == list(range(7))


def test_columns_that_are_never_dropped_stay_even_when_nothing_fits() -> None:
    assert fit(COLUMNS, [32, 39, 11, 14, 10, 7, 6], 20, wide=False) == [0, 1, 2, 5]


def test_at_80_columns_every_id_is_whole_on_one_line_and_nothing_is_cut() -> None:
    text = render(80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for campaign_id in IDS:
        assert campaign_id in text
    assert "…" not in text
    assert "150/200" in text
    assert "not shown at this width: version, strategy (--wide shows them)" in text


def test_wide_shows_every_column_and_keeps_versions_whole() -> None:
    text = render(80, wide=True)
    for value in ("10.20.300-rc.4", "blue_green", *IDS):
        assert value in text
    assert "not shown" not in text


def test_a_wide_terminal_needs_no_wide_flag() -> None:
    text = render(160)
    assert "accord-canary-campaign-with-a-long-name" in text
    assert "10.20.300-rc.4" in text
    assert "not shown" not in text


THREE_IDS = [Column("campaign", Kind.ID), Column("firmware", Kind.ID), Column("update", Kind.ID),
             Column("status", Kind.FIXED), Column("reason")]  # fmt: skip
THREE_ID_ROWS = [
    ("a1" * 16, "b2" * 16, "c3" * 16, "in_progress", "a reason long enough to fold " * 3),
    ("d4" * 16, "e5" * 16, "f6" * 16, "completed", "-"),
]


def test_ids_wider_than_the_terminal_together_are_printed_as_field_value_blocks() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    console.print(fitted_table(THREE_IDS, THREE_ID_ROWS, title="updates", width=80))
    lines = out.getvalue().splitlines()
    assert needed(THREE_IDS, [32, 32, 32, 11, 87], [0, 1, 2, 3, 4]) > 80  # 3 ids: 102 columns
    assert max(len(line) for line in lines) <= 80
    for row in THREE_ID_ROWS:
        for header, value in zip(("campaign", "firmware", "update", "status"), row, strict=False):
            assert any(line.startswith(header) and value in line for line in lines), value
    assert "…" not in out.getvalue()


def test_value_widths_give_an_id_its_width_and_fold_the_label() -> None:
    assert value_widths(10, 30, 30, 80) is None  # fits as it is
    assert value_widths(46, 64, 64, 80) == (14, 64)  # a checksum beside a long label
    assert value_widths(8, 200, 32, 80) == (8, 70)  # free text takes the room left
    assert value_widths(8, 100, 100, 40) == (1, 37)  # an id wider than the terminal folds
