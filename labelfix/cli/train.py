from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..train import events as ev  # light: no torch, so --help stays fast
from ._common import console, flag, handle_errors, parse_floats

DATA, MODEL, SCHEDULE, RUN = "Data", "Model", "Schedule", "Run"

EXAMPLES = """Examples:

  labelfix train --data voc2012 --out my-bank --budget-minutes 60

  labelfix train --data my-dataset --init my-bank --out my-bank-2 --epochs 10      (fine-tune a bank)"""


@handle_errors
def train(
    data: Path = typer.Option(..., "--data", metavar="DIR", rich_help_panel=DATA, show_default=False,
                              help="Dataset folder: VOC layout, or images/ + labels/ + splits/ + classes.json."),
    out: Path = typer.Option(Path("bank"), "--out", metavar="DIR", rich_help_panel=DATA, help="Bank folder to write."),
    views: int = typer.Option(8, "--views", metavar="V", rich_help_panel=DATA,
                              help="Fixed training crops per image (their encoder features are cached)."),
    min_crop: float = typer.Option(0.35, "--min-crop", metavar="F", rich_help_panel=DATA,
                                   help="Smallest share of an image's area a training crop keeps."),
    damage_mix: str = typer.Option("0.4,0.3,0.15,0.15", "--damage-mix", metavar="P,M,B,O", rich_help_panel=DATA,
                                   help="Shares of the training damage: paper masks, missing blocks, blind blocks, "
                                        "blind objects."),
    ratios: str = typer.Option("0.3,0.5,0.7", "--ratios", metavar="R[,R]", rich_help_panel=MODEL,
                               help="Mask ratios of the bank, one model each."),
    preset: str = typer.Option("small", "--preset", metavar="NAME", rich_help_panel=MODEL,
                               help="tiny, small, medium, base, or paper (raw RGB, no image encoder)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", metavar="PX", rich_help_panel=MODEL,
                                             show_default=False, help="Model input side (default: the preset's)."),
    patch_size: Optional[int] = typer.Option(None, "--patch-size", metavar="PX", rich_help_panel=MODEL,
                                             show_default=False, help="Patch side (default: the preset's)."),
    encoder_weights: Optional[Path] = typer.Option(
        None, "--encoder-weights", metavar="FILE", rich_help_panel=MODEL, show_default=False,
        help="Image-encoder weights (scripts/convert_encoder.py); default: the --init bank's, else the bundled one."),
    init: Optional[str] = typer.Option(None, "--init", metavar="BANK", rich_help_panel=MODEL, show_default=False,
                                       help="Start from this bank's weights (same classes) to fine-tune it."),
    epochs: int = typer.Option(30, "--epochs", metavar="N", rich_help_panel=SCHEDULE,
                               help="Epochs of the base model (mask ratios mixed)."),
    finetune_epochs: int = typer.Option(3, "--finetune-epochs", metavar="N", rich_help_panel=SCHEDULE,
                                        help="Epochs of each ratio's fine-tune (0: copy the base)."),
    budget_minutes: Optional[float] = typer.Option(
        None, "--budget-minutes", metavar="MIN", rich_help_panel=SCHEDULE, show_default=False,
        help="Fit the schedule to this much time (80% base, 20% fine-tunes); epochs become upper bounds."),
    batch_size: int = typer.Option(16, "--batch-size", metavar="N", rich_help_panel=SCHEDULE),
    lr: float = typer.Option(5e-4, "--lr", metavar="LR", rich_help_panel=SCHEDULE,
                             help="Adam learning rate of the base model."),
    loss_on: str = typer.Option("removed", "--loss-on", metavar="removed|all", rich_help_panel=SCHEDULE,
                                help="removed: unknown pixels only; all: every labelled pixel."),
    val_every: int = typer.Option(5, "--val-every", metavar="N", rich_help_panel=SCHEDULE,
                                  help="Epochs between validations."),
    calibrate_images: int = typer.Option(64, "--calibrate-images", metavar="N", rich_help_panel=SCHEDULE,
                                         help="Val labels that calibrate the repair modes after training (0: skip)."),
    seed: int = typer.Option(0, "--seed", metavar="N", rich_help_panel=SCHEDULE),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda", rich_help_panel=RUN,
                               help="Device (bf16 autocast on CUDA)."),
    workers: int = typer.Option(0, "--workers", metavar="N", rich_help_panel=RUN, help="Data loader processes."),
    resume: bool = flag(False, "--resume", panel=RUN, help="Continue an interrupted run in --out."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", metavar="MIN", rich_help_panel=RUN,
                                                show_default=False, help="Stop cleanly after this long (resumable)."),
    quiet: bool = flag(False, "--quiet", "-q", panel=RUN, help="Print only the bank folder."),
):
    from ..train.loop import train_bank  # torch: imported when a command runs, not for --help
    from ..train.settings import TrainSettings  # torch: imported when a command runs, not for --help

    settings = TrainSettings(data=data, out=out, ratios=parse_floats(ratios, "--ratios"), preset=preset, epochs=epochs,
                             finetune_epochs=finetune_epochs, batch_size=batch_size, input_size=input_size,
                             patch_size=patch_size, lr=lr, loss_on=loss_on,
                             damage_mix=parse_floats(damage_mix, "--damage-mix"), min_crop=min_crop,
                             views=views, encoder_weights=encoder_weights, val_every=val_every, device=device,
                             seed=seed, workers=workers, resume=resume, max_minutes=max_minutes,
                             budget_minutes=budget_minutes, calibrate_images=calibrate_images, init=init)
    on_event = _TrainProgress(quiet)
    with on_event.bar:
        result = train_bank(settings, on_event)
    if quiet:
        print(result.bank)
    elif result.finished:
        console.print(f"bank written to {result.bank} in {result.seconds / 60:.1f} min")
    else:
        console.print(f"stopped after {result.seconds / 60:.1f} min; continue with the same command and --resume")


class _TrainProgress:
    """The progress handler of `train`: its bars (one per epoch, the encoder's and the calibration's) and notes."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                            console=console, disable=quiet, transient=True)
        self.tasks: dict = {}

    def __call__(self, e):
        """Show one event of the training's progress (train/events.py)."""
        if isinstance(e, (ev.Step, ev.FeaturesStep, ev.CalibrateStep)):
            self.advance(e)
        elif not self.quiet:
            self.say(e)

    def advance(self, e) -> None:
        """Move the bar of a step event: the epoch's, the image encoder's or the calibration's."""
        if isinstance(e, ev.Step):
            key, label, total = (e.stage, e.epoch), f"{e.stage} epoch {e.epoch}/{e.epochs}", e.steps
        elif isinstance(e, ev.FeaturesStep):
            key, label, total = ("features", e.total), "image encoder", e.total
        else:
            key, label, total = "calibrate", "calibrating repair modes", e.total
            if key not in self.tasks and not self.quiet:  # the bar is gone from a log file: say what comes
                console.print(f"calibrating the repair modes ({e.total} steps)")
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(label, total=total, info="")
        info = f"loss {e.loss:.4f}  {e.images_per_s:.1f} img/s" if isinstance(e, ev.Step) else ""
        self.bar.update(self.tasks[key], completed=e.step if isinstance(e, ev.Step) else e.done, info=info)

    def say(self, e) -> None:
        """Print what an event says, one or a few lines."""
        fitting = {"extent": "the background bias of holes", "refiner": "the boundary refiner",
                   "refiner-second": "the boundary refiner's second pass"}
        if isinstance(e, ev.TrainStarted):
            console.print(f"training {e.params / 1e6:.2f}M-parameter L-MAE on {e.train_images} images, "
                          f"{e.device} x{e.world}; stages: {', '.join(e.stages)}")
        elif isinstance(e, ev.FeaturesStarted):
            console.print(f"image-encoder features of {e.images} images x {e.views} views (cached; computed once)")
        elif isinstance(e, ev.FitStarted) and e.what in fitting:
            console.print(f"fitting {fitting[e.what]} on {e.images} labels")
        elif isinstance(e, ev.ExtentFitted):
            console.print(f"  {e.samples} pixels in {e.seconds:.0f} s")
        elif isinstance(e, ev.Calibrated):
            for mode, scores in e.scores.items():
                best = e.chosen[mode]
                console.print(f"  calibration, {mode}: {best} ({scores[best]:.1f} mIoU; "
                              f"nearest-label fill {scores['0.0']:.1f})")
        elif isinstance(e, ev.RefinerFitted) and e.skipped:
            console.print(f"  skipped: {e.skipped}")
        elif isinstance(e, ev.RefinerFitted):
            scores = ", ".join(f"{m} {w:.1f} -> {r:.1f}" for m, (w, r) in (e.scores or {}).items())
            console.print(f"  {e.samples} pixels in {e.seconds:.0f} s; validation mIoU without -> with: "
                          f"{scores or 'not measured'}; applied in: {', '.join(e.modes) or 'no mode'}")
        elif isinstance(e, ev.EpochDone) and e.val:
            for v in e.val:
                console.print(f"  {e.stage} epoch {e.epoch}: ratio {v['ratio']:.2f}  "
                              f"PA-mIoU {v['pa_miou']:.1f}  mIoU {v['miou']:.1f}  "
                              f"(nearest-label fill PA-mIoU {v['nearest_pa_miou']:.1f})")
