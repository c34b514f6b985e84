from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import UsageError
from ..repair.events import FileDone, Note, RepairStarted
from ..repair.processes import shard_from_environment
from ._common import console, flag, handle_errors, parse_ints, printable


def _shard(text: Optional[str]):
    if not text:
        # under torchrun every rank runs this command: each repairs its share, not all of them
        return shard_from_environment() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    if text == "auto":
        found = shard_from_environment()
        if found is None:
            raise UsageError("--shard auto: no torchrun (RANK, WORLD_SIZE) or Slurm job array "
                             "(SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) in the environment; give I/N")
        return found
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    return i, n


SHOW_FAILURES = 20  # failed files named one line each; the rest are counted


INPUT, FILL, OUTPUT, SPEED, SHARDS = "Input", "What to fill", "Output", "Model and speed", "Shards"

EXAMPLES = """Examples:

  labelfix repair voc/SegmentationClass --images voc/JPEGImages --missing 255 --preview

  labelfix repair labels --images images                      (blind: fill what looks missing)

  labelfix repair labels --images images --bank my-bank --classes bank --out fixed"""


@handle_errors
def repair(
    labels: Path = typer.Argument(..., metavar="LABELS", show_default=False,
                                  help="Folder of label PNGs (palette or index)."),
    images: Optional[Path] = typer.Option(
        None, "--images", metavar="DIR", rich_help_panel=INPUT, show_default=False,
        help="Folder of the matching images (same stems; may be LABELS). Default: where VOC, ADE20K, Cityscapes "
             "and images/ + labels/ layouts keep them."),
    recursive: bool = flag(False, "--recursive", "-r", panel=INPUT,
                           help="Also repair LABELS' subfolders (Cityscapes' cities); the output mirrors the tree."),
    classes: Optional[str] = typer.Option(
        None, "--classes", metavar="FILE|bank", rich_help_panel=INPUT, show_default=False,
        help="The labels' classes.json (it must be the bank's), or `bank`: the labels use the bank's classes. "
             "Default: a classes.json beside or above LABELS, or palette labels in the bank's palette."),
    missing: list[str] = typer.Option(
        [], "--missing", metavar="V[,V]", rich_help_panel=FILL, show_default=False,
        help="Pixel value(s) that mark unlabelled pixels: fill exactly those. Without it: blind fill."),
    policy: str = typer.Option("fill", "--policy", metavar="fill|replace", rich_help_panel=FILL,
                               help="fill: change only background/unlabelled pixels; replace: also rewrite what "
                                    "the model removed."),
    erasures: bool = typer.Option(
        True, "--erasures/--no-erasures", metavar="", rich_help_panel=FILL, show_default=False,
        help="Blind fill: read VOC-style void outlines for blocks erased to background and objects that lost "
             "their class (on by default)."),
    ratio: str = typer.Option("auto", "--ratio", metavar="R|auto", rich_help_panel=FILL,
                              help="The mask ratio patches are removed at; auto: each label's background fraction."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", metavar="P", rich_help_panel=FILL,
                                         help="Leave a pixel unchanged where the model is less sure than P."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", rich_help_panel=OUTPUT, show_default=False,
                                       help="Output folder (default: LABELS-repaired)."),
    preview: bool = flag(False, "--preview", panel=OUTPUT, help="Write preview.html with before/after overlays."),
    dry_run: bool = flag(False, "--dry-run", panel=OUTPUT, help="Print what would change; write nothing."),
    overwrite: bool = flag(False, "--overwrite", panel=OUTPUT, help="Redo files already in the output folder."),
    quiet: bool = flag(False, "--quiet", "-q", panel=OUTPUT, help="Print only the output folder."),
    as_json: bool = flag(False, "--json", panel=OUTPUT, help="Print the totals and rows as JSON."),
    bank: Optional[str] = typer.Option(None, "--bank", metavar="DIR|hf://ORG/REPO", rich_help_panel=SPEED,
                                       show_default=False, help="Model bank (default: the bundled VOC bank)."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda", rich_help_panel=SPEED, help="Device."),
    precision: str = typer.Option("auto", "--precision", metavar="auto|fp32|bf16", rich_help_panel=SPEED,
                                  help="auto: bf16 on CUDA, fp32 on the CPU."),
    batch_size: int = typer.Option(8, "--batch-size", metavar="N", rich_help_panel=SPEED,
                                   help="Labels decoded and finished together."),
    workers: int = typer.Option(0, "--workers", metavar="N", rich_help_panel=SPEED,
                                help="Threads per process (0: one per core, at most 4)."),
    processes: int = typer.Option(0, "--processes", metavar="N", rich_help_panel=SPEED,
                                  help="Processes (0: one per 4 cores, with 128 files or more each)."),
    shard: Optional[str] = typer.Option(
        None, "--shard", metavar="I/N|auto", rich_help_panel=SHARDS, show_default=False,
        help="Repair a fixed 1/N of the files; auto: this rank's share under torchrun or a Slurm array. "
             "The last shard to finish joins the reports."),
    merge: bool = flag(False, "--merge-reports", panel=SHARDS, help="Join the shard reports in --out, then exit."),
):
    from ..repair.report import merge_reports  # torch: imported when a command runs, not for --help
    from ..repair.run import repair as run_repair
    from ..repair.settings import RepairSettings, default_out  # torch: imported when a command runs, not for --help

    if merge:
        path = merge_reports(out or default_out(labels))
        print(path.parent if quiet else f"merged into {path}")
        return
    settings = RepairSettings(labels=labels, images=images, out=out, bank=bank,
                              missing=parse_ints(missing, "--missing"),
                              ratio=None if ratio == "auto" else _float(ratio, "--ratio"), policy=policy,
                              min_confidence=min_confidence, device=device, batch_size=batch_size,
                              preview=preview, dry_run=dry_run, overwrite=overwrite, shard=_shard(shard),
                              workers=workers, processes=processes, precision=precision, find_erasures=erasures,
                              recursive=recursive, classes=classes)
    on_event = _RepairProgress(labels, images, quiet, as_json)
    with on_event.bar:
        result = run_repair(settings, on_event)
    _print_summary(result, settings, on_event.failures, quiet, as_json)
    if result.failed:
        raise typer.Exit(1)


class _RepairProgress:
    """The progress handler of `repair`: its bar, its notes, and the failed files it has named."""

    def __init__(self, labels: Path, images: Optional[Path], quiet: bool, as_json: bool):
        self.labels, self.images, self.as_json = labels, images, as_json
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[speed]}"), TimeRemainingColumn(), console=console,
                            disable=quiet or as_json, transient=True)
        self.task = None
        self.failures = 0
        self.chatty = not (quiet or as_json)  # --json prints only the JSON

    def __call__(self, e):
        """Show one event of the repair's progress (repair/events.py)."""
        if isinstance(e, RepairStarted):
            self.started(e)
        elif isinstance(e, Note) and self.chatty:
            console.print(f"labelfix: {e.message}", markup=False)
        elif isinstance(e, FileDone):
            row = e.row
            if row.status == "failed" and not self.as_json:
                self.failures += 1
                if self.failures <= SHOW_FAILURES:  # the report lists them all: a wrong folder is not 10,000 lines
                    console.print(f"labelfix: {printable(str(self.labels / row.file))}: {printable(row.error)}",
                                  markup=False)
            elapsed = self.bar.tasks[self.task].elapsed or 0
            done = self.bar.tasks[self.task].completed + 1
            self.bar.update(self.task, advance=1, speed=f"{done / elapsed:.1f} img/s" if elapsed else "")

    def started(self, e) -> None:
        label = "repairing" + (f" ({e.processes} processes)" if e.processes > 1 else "")
        self.task = self.bar.add_task(label, total=e.todo, speed="")
        if not self.chatty:
            return
        if self.images is None:
            console.print(f"images: {e.images}  (found where the layout keeps them; --images chooses)", markup=False)
        if e.companions:
            console.print(f"left out {e.companions} files beside the labels that are not label maps "
                          "(classes.json, READMEs, lists, Cityscapes colour, instance and polygon files)")
        if e.resumed:
            console.print(f"{e.resumed} files already done in {printable(e.out)}: their rows come from its "
                          "journal (--overwrite redoes them)", markup=False)


def _print_summary(result, settings, failures: int, quiet: bool, as_json: bool) -> None:
    """Print the run's totals: as JSON, as the output folder alone, or as a sentence and what was written."""
    t = result.totals
    dry_run, preview = settings.dry_run, settings.preview
    if failures > SHOW_FAILURES:
        console.print(f"labelfix: {failures - SHOW_FAILURES} more files failed; report.csv gives each one's reason")
    if as_json:
        print(json.dumps({"out": str(result.out), "totals": t, "rows": [r.__dict__ for r in result.rows]}, indent=2))
    elif quiet:
        print(result.out)
    else:
        resumed = f" ({t['resumed']} by an earlier run)" if t["resumed"] else ""
        console.print(f"{t['repaired']} repaired, {t['unchanged']} unchanged{resumed}, "
                      f"{t['failed']} failed, {t['needs_review']} need review; {t['pixels_changed']} pixels changed; "
                      f"{t['images_per_s']} img/s" + ("; a dry run: nothing written" if dry_run else ""))
        if not dry_run:
            written = _written(result, settings, preview)
            console.print(f"output: {printable(str(result.out))}  ({written})", markup=False)


def _written(result, settings, preview: bool) -> str:
    """What the run wrote beside the labels."""
    part = result.report_path
    if settings.shard is None:
        return "report.json, report.csv" + (", preview.html" if preview else "")
    if result.joined is not None:  # the last shard to finish: every shard's report is joined
        return (f"{part.name}, {part.with_suffix('.csv').name}; every shard is done, joined in report.json, "
                "report.csv" + (", preview.html" if preview else ""))
    return (f"{part.name}, {part.with_suffix('.csv').name}"
            + ("; preview.html when the last shard joins the reports" if preview else ""))


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected a number or auto") from None
