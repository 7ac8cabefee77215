"""`-o table|json` on every read and write command, `--json` kept as a hidden alias,
shell completion on, and no `<bool>` after a flag in `--help`.

The commands are read from the real `v2c` app (Click's command tree), so a new
command without the option fails here, not in a user's script.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.testing import CliRunner

from v2c.infra.cli.main import app
from v2c.infra.cli.output import Format, key_value_table, wants_json

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def documented_without_output() -> set[str]:
    """The commands docs/cli.md names under "Commands without `-o`" (`bench ...`: the group)."""
    paragraph = DOCS.read_text().split("Commands without `-o`:", 1)[1].split("\n\n", 1)[0]
    return {name.removesuffix(" ...") for name in re.findall(r"`([a-z][a-z .-]*)`", paragraph)}


# Commands that only run something (a process, a demo, a check, a benchmark): docs/cli.md.
NOT_READ_OR_WRITE = documented_without_output()


def commands() -> dict[str, Any]:
    """Every leaf command by its path (typer vendors Click: duck-typed here)."""
    found: dict[str, Any] = {}

    def walk(prefix: str, command: Any) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            found[prefix] = command

    walk("", typer.main.get_command(app))
    return found


def options(command: Any) -> dict[str, Any]:
    return {
        opt: param
        for param in command.params
        if param.param_type_name == "option"
        for opt in param.opts
    }


def test_every_read_and_write_command_takes_output_table_or_json() -> None:
    checked = 0
    for name, command in commands().items():
        if name.split(" ")[0] in NOT_READ_OR_WRITE or name in NOT_READ_OR_WRITE:
            continue
        opts = options(command)
        assert "--output" in opts, name
        assert "-o" in opts, name
        choices = opts["--output"].type_descriptor.choices or ()
        assert [str(c) for c in choices] == ["table", "json"], name
        if "--json" in opts:  # the old flag stays for scripts, out of --help
            assert opts["--json"].hidden, name
        checked += 1
    assert checked >= 30


def test_the_commands_the_audit_named_have_json_now() -> None:
    found = commands()
    for name in ("campaign watch", "stack status", "aws bootstrap", "stats", "device update",
                 "device rollback", "firmware build"):  # fmt: skip
        assert "--output" in options(found[name]), name


def test_lists_take_wide() -> None:
    found = commands()
    for name in ("campaign list", "firmware list", "vehicle list", "dlq list", "device history"):
        assert "--wide" in options(found[name]), name


def test_json_wins_whichever_way_it_was_asked_for() -> None:
    assert wants_json(Format.JSON)
    assert wants_json(Format.TABLE, as_json=True)
    assert not wants_json(Format.TABLE)


def test_an_answer_without_a_table_of_its_own_is_shown_as_fields() -> None:
    answer = {
        "update_id": "u" * 32,
        "counters": {"completed": 10, "failed": 0},
        "waves": [{"name": "canary", "size": 2}],
        "gate": None,
    }
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(key_value_table(answer))
    text = out.getvalue()
    assert "u" * 32 in text
    assert "completed 10  failed 0" in text  # a set of counters on one row
    assert "waves[canary]  size 2" in text  # a list of objects, each named
    assert max(len(line) for line in text.splitlines()) <= 80


def test_help_shows_no_bool_metavar_after_a_flag() -> None:
    result = CliRunner().invoke(app, ["campaign", "list", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    assert "--wide" in result.output
    assert "<table|json>" in result.output


def test_shell_completion_is_on() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert "--install-completion" in result.output
    shown = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert shown.exit_code == 0, shown.output
    assert "_v2c_completion" in shown.output


def test_the_commands_without_output_are_exactly_those_docs_cli_md_lists() -> None:
    documented = {"api serve", "gateway run", "stack up", "demo", "selftest", "bench"}
    assert documented == NOT_READ_OR_WRITE
    without = {name for name, command in commands().items() if "--output" not in options(command)}
    assert {name.split(" ")[0] if name.startswith("bench ") else name for name in without} == (
        NOT_READ_OR_WRITE
    )


def test_sim_pki_and_stack_down_take_output_and_sim_keeps_json_hidden() -> None:
    found = commands()
    for name in ("sim", "pki init", "pki issue", "stack down", "stack status"):
        assert "-o" in options(found[name]), name
    assert options(found["sim"])["--json"].hidden


def test_a_long_field_folds_before_a_checksum_beside_it() -> None:
    checksum = "0123456789abcdef" * 4
    answer = {
        "target": {"firmware": {"package_checksum_sha256": checksum, "tags": ["beta", "eu"]}},
        "campaign_id": "c" * 32,
        "status_reason": "a canary gate failed because more than five percent failed " * 2,
    }
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(key_value_table(answer, width=80))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(checksum in line for line in lines)  # whole, on one line
    assert any("c" * 32 in line for line in lines)
    # the label folded instead: it no longer stands whole on one line
    assert not any("target.firmware.package_checksum_sha256" in line for line in lines)
