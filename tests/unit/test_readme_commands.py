"""The README's command table and the `v2c` command tree say the same thing.

A newcomer reads the table first; a command missing from it (as `v2c sim` and
`v2c bench fleet` once were) is a command nobody finds, and a row for a
command that no longer exists sends them to an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
from typer.main import get_command

from v2c.infra.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def command_paths(command: click.Command, prefix: tuple[str, ...]) -> Iterator[str]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield " ".join(prefix)
        return
    for name, sub in subcommands.items():
        yield from command_paths(sub, (*prefix, name))


def listed_commands(readme: str) -> set[str]:
    """Each first-column entry: `v2c group a/b/c [options]` lists three commands."""
    table = readme.split("| command | what it does |", 1)[1].split("\n\n", 1)[0]
    listed = set()
    for cell in re.findall(r"^\| `(v2c[^`]*)`", table, re.M):
        words = re.sub(r"\[[^]]*\]", "", cell).split()
        *group, last = words
        listed.update(" ".join([*group, name]) for name in last.split("/"))
    return listed


def test_the_readme_lists_every_command_and_only_those() -> None:
    actual = set(command_paths(get_command(app), ("v2c",)))
    assert listed_commands(README.read_text(encoding="utf-8")) == actual


def test_a_row_with_subcommands_and_options_expands() -> None:
    table = (
        "| command | what it does |\n|---|---|\n"
        "| `v2c stack up [--dir .stack]` | x |\n| `v2c dlq list/show` | y |\n"
    )
    assert listed_commands(table) == {"v2c stack up", "v2c dlq list", "v2c dlq show"}
