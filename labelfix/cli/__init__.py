"""The command line: parse, call one library function, print. Only this package imports Typer and Rich.

The library (and torch) is imported when a command runs, not for `--help`."""

from __future__ import annotations

import typer

from ._common import Command, Group
from .bench import bench
from .repair import EXAMPLES as REPAIR_EXAMPLES
from .repair import repair
from .train import EXAMPLES as TRAIN_EXAMPLES
from .train import train

app = typer.Typer(cls=Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Repair incomplete semantic-segmentation labels with a label masked autoencoder (L-MAE).")


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__
        typer.echo(f"labelfix {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, metavar="",
                                          help="Print labelfix's version and exit.")) -> None:
    pass


app.command(cls=Command, epilog=REPAIR_EXAMPLES,
            help="Complete the labels in LABELS into a new folder (default LABELS-repaired).")(repair)
app.command(cls=Command, epilog=TRAIN_EXAMPLES,
            help="Train a model bank (one L-MAE per mask ratio) on a dataset folder.")(train)
app.command(cls=Command, epilog="Example:\n\n  labelfix bench --data voc2012 --metric pa-miou --plot pa-miou.png",
            help="Score a bank on a dataset with the paper's PA-mIoU, next to simple baselines.")(bench)


def main() -> None:
    app()
