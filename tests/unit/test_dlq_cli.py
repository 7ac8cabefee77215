"""`v2c dlq` refusals that need no stack: one readable line and the exit code
of every `v2c` command (2 bad options, 3 no stack)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from v2c.infra.cli.commands.dlq import hex_preview
from v2c.infra.cli.main import app


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_bad_since_duration_exits_2_naming_the_expected_forms(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["dlq", "list", "--since", "2x", "--stack", str(tmp_path)])

    assert result.exit_code == 2, result.output
    assert "invalid time '2x'" in result.output
    assert "Traceback" not in result.output


def test_bad_purge_duration_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["dlq", "purge", "--older-than", "soon", "--yes", "--stack", str(tmp_path)]
    )

    assert result.exit_code == 2, result.output
    assert "invalid time 'soon'" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["dlq", "list"],
        ["dlq", "show", "0000000000000-0000000000000000"],
        ["dlq", "replay", "--all"],
        ["dlq", "purge", "--older-than", "7d", "--yes"],
    ],
)
def test_every_command_without_a_stack_exits_4_and_says_where_it_looked(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    result = runner.invoke(app, [*args, "--stack", str(tmp_path / "nowhere")])

    assert result.exit_code == 4, result.output
    assert "no stack description" in result.output


@pytest.mark.parametrize("args", [["--all", "--id", "x"], []])
def test_replay_needs_exactly_one_of_id_or_all(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    result = runner.invoke(app, ["dlq", "replay", *args, "--stack", str(tmp_path)])

    assert result.exit_code == 2, result.output
    assert "--id" in result.output


def test_replay_with_an_unloadable_rules_table_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["dlq", "replay", "--all", "--rules", "no_such_module:RULES", "--stack", str(tmp_path)]
    )

    assert result.exit_code == 2, result.output
    assert "cannot load rules" in result.output


def test_unknown_queue_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["dlq", "list", "--queue", "billing", "--stack", str(tmp_path)])

    assert result.exit_code == 2


def test_hex_preview_shows_offsets_hex_and_only_printable_ascii() -> None:
    preview = hex_preview(b"AB\x00\x1b[31m" + bytes(range(0x7E, 0x84)))

    assert (
        preview
        == "00000000  41 42 00 1b 5b 33 31 6d 7e 7f 80 81 82 83" + " " * 6 + "  |AB..[31m~.....|"
    )
    assert "\x1b" not in preview


def test_hex_preview_of_a_long_payload_says_how_much_it_left_out() -> None:
    preview = hex_preview(bytes(1000), limit=32)

    assert preview.splitlines()[-1] == "... 968 more bytes"
    assert len(preview.splitlines()) == 3


def test_hex_preview_of_an_empty_payload() -> None:
    assert hex_preview(b"") == "(empty)"
