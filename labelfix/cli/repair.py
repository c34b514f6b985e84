from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import UsageError
from ..processes import shard_from_environment
from ._common import console, handle_errors, printable


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


@handle_errors
def repair(
    labels: Path = typer.Argument(..., metavar="LABELS", help="Folder of label PNGs (palette or index)."),
    images: Path = typer.Option(None, "--images", help="Folder of the matching images (same file stems, "
                                                       "or x.jpg for x_mask.png and Cityscapes' names; .jpg, .png, "
                                                       ".webp, .tif, .bmp); may be LABELS itself. Default: where VOC, "
                                                       "ADE20K, Cityscapes and images/ + labels/ layouts keep them."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: <LABELS>-repaired)."),
    bank: Optional[str] = typer.Option(None, "--bank", help="Bank folder or hf://ORG/REPO (default: the bundled VOC bank)."),
    missing: list[int] = typer.Option([], "--missing", help="A value that marks unlabelled pixels; fill exactly those. Repeatable."),
    ratio: str = typer.Option("auto", "--ratio", help="Mask ratio, or auto (from each label's background fraction)."),
    policy: str = typer.Option("fill", "--policy", help="fill: change only background/unlabelled pixels; replace: rewrite removed patches."),
    erasures: bool = typer.Option(True, "--erasures/--no-erasures", help="Blind fill: read the outlines (where labels outline objects) for blocks erased to background (objects cut along straight edges), filled like --missing, and for objects relabelled to background (an outline with background on both sides), given back the class the bank's namer finds likeliest."),
    classes: Optional[str] = typer.Option(None, "--classes", help="FILE: a classes.json naming the labels' classes (names, ignore_index, background_index), which must be the bank's; bank: the labels use the bank's class list. Default: a classes.json beside or above the labels, or palette labels in the bank's palette."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", help="Keep a pixel unchanged below this model probability."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int = typer.Option(8, "--batch-size", help="Labels per model batch."),
    workers: int = typer.Option(0, "--workers", help="Threads a process that decode, infer, finish and write (0: one per CPU core, at most 4)."),
    processes: int = typer.Option(0, "--processes", help="Processes that each repair a share of the files (0: one per 4 CPU cores, with 128 files or more each)."),
    precision: str = typer.Option("auto", "--precision", help="Model precision: auto (bf16 on CUDA or a CPU with native bf16), fp32 or bf16."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Repair the labels in LABELS' subfolders too (Cityscapes' cities): the images are looked for in the same subfolders of IMAGES, and the output mirrors the tree."),
    preview: bool = typer.Option(False, "--preview", help="Write preview.html with before/after overlays."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write only the report, no labels."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo files already in the output folder."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: repair a deterministic 1/N of the files; auto: this process's share under torchrun (the default there) or a Slurm job array. The last shard to finish joins the reports."),
    merge: bool = typer.Option(False, "--merge-reports", help="Join the shard reports in the output folder, then exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the totals and rows as JSON."),
):
    from ..repair import RepairSettings, merge_reports  # torch: imported when a command runs, not for --help
    from ..repair import repair as run_repair

    if merge:
        target = out or (labels.resolve().with_name(labels.resolve().name + "-repaired"))
        path = merge_reports(target)
        print(path.parent if quiet else f"merged into {path}")
        return
    settings = RepairSettings(labels=labels, images=images, out=out, bank=bank, missing=tuple(missing),
                              ratio=None if ratio == "auto" else _float(ratio, "--ratio"), policy=policy,
                              min_confidence=min_confidence, device=device, batch_size=batch_size,
                              preview=preview, dry_run=dry_run, overwrite=overwrite, shard=_shard(shard),
                              workers=workers, processes=processes, precision=precision, find_erasures=erasures,
                              recursive=recursive, classes=classes)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
                   TimeRemainingColumn(), console=console, disable=quiet or as_json, transient=True)
    task = None
    failures = 0
    chatty = not (quiet or as_json)  # --json prints only the JSON

    def on_event(e: dict):
        nonlocal task, failures
        if e["event"] == "start":
            processes = e.get("processes", 1)
            task = bar.add_task("repairing" + (f" ({processes} processes)" if processes > 1 else ""), total=e["todo"], speed="")
            if images is None and chatty:
                console.print(f"images: {e['images']}  (found where the layout keeps them; --images chooses)", markup=False)
            if e.get("companions") and chatty:
                console.print(f"left out {e['companions']} files beside the labels that are not label maps "
                              "(classes.json, READMEs, lists, Cityscapes colour, instance and polygon files)")
            if e["resumed"] and chatty:
                console.print(f"{e['resumed']} files already done in {printable(e['out'])}: their rows come from its "
                              "journal (--overwrite redoes them)", markup=False)
        elif e["event"] == "note" and chatty:
            console.print(f"labelfix: {e['message']}", markup=False)
        elif e["event"] == "file":
            row = e["row"]
            if row["status"] == "failed" and not as_json:
                failures += 1
                if failures <= SHOW_FAILURES:  # the report lists them all: a wrong folder is not 10,000 lines
                    console.print(f"labelfix: {printable(str(labels / row['file']))}: {printable(row['error'])}",
                                  markup=False)
            elapsed = bar.tasks[task].elapsed or 0
            done = bar.tasks[task].completed + 1
            bar.update(task, advance=1, speed=f"{done / elapsed:.1f} img/s" if elapsed else "")

    with bar:
        result = run_repair(settings, on_event)
    t = result.totals
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
            console.print(f"output: {printable(str(result.out))}  ({_written(result, settings, preview)})", markup=False)
    if result.failed:
        raise typer.Exit(1)


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
