"""The command line: parse, call one library function, print. Only this package imports Typer and Rich."""

from __future__ import annotations

import gc

# Importing torch creates a few hundred thousand long-lived objects. The collector's full passes over
# them, during the import and again when the interpreter exits, cost about half a second a command;
# none of it is garbage, so collect nothing while importing and freeze what was imported.
gc.disable()
import typer  # noqa: E402

from .bench import bench  # noqa: E402
from .repair import repair  # noqa: E402
from .train import train  # noqa: E402

gc.freeze()
gc.enable()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Repair incomplete semantic-segmentation labels with a label masked autoencoder (L-MAE).")


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__
        typer.echo(f"labelfix {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                          help="Print labelfix's version and exit.")) -> None:
    pass


app.command(help="Complete the labels in LABELS into a new folder (default <LABELS>-repaired).")(repair)
app.command(help="Train a model bank (one L-MAE per mask ratio) on a dataset folder.")(train)
app.command(help="Score a bank on a dataset with the paper's PA-mIoU, next to simple baselines.")(bench)


def main() -> None:
    app()
