"""The command line: parse, call one library function, print. Only this package imports Typer and Rich."""

from __future__ import annotations

import typer

from .bench import bench
from .repair import repair
from .train import train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Repair incomplete semantic-segmentation labels with a label masked autoencoder (L-MAE).")
app.command(help="Complete the labels in LABELS into a new folder (default <LABELS>-repaired).")(repair)
app.command(help="Train a model bank (one L-MAE per mask ratio) on a dataset folder.")(train)
app.command(help="Score a bank on a dataset with the paper's PA-mIoU, next to simple baselines.")(bench)


def main() -> None:
    app()
