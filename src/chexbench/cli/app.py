"""The Typer application objects; command modules attach their commands to these.

Domain errors (:class:`chexbench.core.errors.ChexbenchError`) raised anywhere under a command
become one red line on stderr and exit code 2; filesystem faults (``OSError``: read-only,
permission, no space, missing folder) one line naming the path and what to do, exit code 1;
nothing else is printed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table as _RichTable
from typer.core import TyperGroup, TyperOption

from chexbench import __version__
from chexbench.core.errors import ChexbenchError, os_error_line

# options shared by several commands' signatures
RESULTS_HELP = "results directory (one Parquet record + predictions per cell)"
GridOpt = Annotated[
    str, typer.Option("--grid", "-g", help="grid preset name (smoke, full) or path to a TOML file")
]
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only", help="keep cells whose axis matches, e.g. --only strategy=scratch,simclr --only seed=0"
    ),
]
ResultsOpt = Annotated[Path, typer.Option("--results", "-r", help=RESULTS_HELP)]

#: width used when the output is not a terminal: Rich would otherwise wrap and cut tables at 80
#: columns, so a piped or redirected table would lose text (ids, intervals) behind "…"
PIPE_WIDTH = 10_000


def _width(stream) -> int | None:
    """None (Rich measures the terminal) on a terminal or when COLUMNS is set; PIPE_WIDTH otherwise."""
    if os.environ.get("COLUMNS"):
        return None
    try:
        return None if stream.isatty() else PIPE_WIDTH
    except (AttributeError, ValueError):
        return PIPE_WIDTH


class Table(_RichTable):
    """A Rich table whose cells fold long text onto more lines instead of cutting it with "…":
    in a narrow terminal or a pipe nothing is lost (an id, an interval, a failure reason)."""

    def add_column(self, *args, **kwargs) -> None:  # type: ignore[override]
        kwargs.setdefault("overflow", "fold")
        super().add_column(*args, **kwargs)


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


class _ErrorsAsOneLine(TyperGroup):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ChexbenchError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except BrokenPipeError:  # `chexbench … | head`: the reader has gone; nothing to tell it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except (
            OSError
        ) as e:  # read-only folder, permissions, full disk, missing folder: the machine, not a bug
            err_console.print(
                f"[bold red]error:[/] {escape(os_error_line(e))}", highlight=False, soft_wrap=True
            )
            sys.exit(1)


def _flag_type(self: TyperOption, ctx: click.Context) -> str | None:
    """A flag takes no value: its help row shows no ``<bool>`` type (typer shows one for every option)."""
    return None if self.is_flag else _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

# help texts are Markdown: `code` shows as code, and "[settings]" stays text (Rich markup would eat it as a
# tag)
app = typer.Typer(
    cls=_ErrorsAsOneLine,
    name="chexbench",
    help="Benchmark pretraining strategies for chest X-ray classifiers, with honest statistics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
data_app = typer.Typer(help="Generate phantom data, prepare and verify datasets.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure speed; results go to docs/PERFORMANCE.md.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        console.print(f"chexbench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        help="print the chexbench version and exit",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Benchmark pretraining strategies for chest X-ray classifiers, with honest statistics."""


app.add_typer(bench_app, name="bench")
