"""The Typer application objects; command modules attach their commands to these.

Domain errors (:class:`chexbench.errors.ChexbenchError`) raised anywhere under a command
become one red line on stderr and exit code 2; nothing else is printed.
"""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from chexbench.errors import ChexbenchError

console = Console()
err_console = Console(stderr=True)


class _ErrorsAsOneLine(TyperGroup):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ChexbenchError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            sys.exit(2)


app = typer.Typer(
    cls=_ErrorsAsOneLine,
    name="chexbench",
    help="Benchmark pretraining strategies for chest X-ray classifiers, with honest statistics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate phantom data, prepare and verify datasets.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure speed; results go to docs/PERFORMANCE.md.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
