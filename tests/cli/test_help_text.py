"""Every command's --help as a user reads it: no text lost to markup, no RST, no type on a flag."""

from __future__ import annotations

import re

import click
import typer
from typer.testing import CliRunner

from chexbench.cli import app

runner = CliRunner()


def _commands(group: click.Group, prefix: list[str]):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield [*prefix, name], cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, [*prefix, name])


def test_help_keeps_its_words():
    root = typer.main.get_command(app)
    checked = 0
    for path, cmd in [([], root), *_commands(root, [])]:
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"})
        assert r.exit_code == 0, (path, r.output)
        out = r.output
        assert "``" not in out, (path, "RST double backticks")
        assert "<bool>" not in out, (path, "a flag shown as taking a <bool> value")
        sources = [cmd.help or "", *(getattr(p, "help", "") or "" for p in cmd.params)]
        for text in sources:
            for bracket in re.findall(
                r"\[[a-z_.]+\]", text
            ):  # "[settings]", "[strategy.checkpoint]": text, not markup
                assert bracket in out, (path, bracket)
        checked += 1
    assert checked > 10


def test_list_help_names_the_settings_table():
    out = runner.invoke(app, ["list", "--help"], env={"COLUMNS": "400"}).output
    assert "every [settings] key" in out  # was "every  key"
