"""`labelfix repair`: complete a folder of broken labels into a new folder, safely.

One path: discover the files and check the settings (discover.py), take the folder's lock and resume from
its journals (outfolder.py), run the pipeline (pipeline.py; on many cores in processes, processes.py),
write the report (report.py) and the review page (preview.py). Bad files become report rows with a
reason; they never stop the batch."""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Callable

import torch

from ..bank.store import Bank, load_bank
from ..device import pick_device, resolve_precision
from ..errors import UsageError
from ..files import OutputError, describe_write_error
from .discover import (
    check_classes,
    check_missing_values,
    check_settings,
    files_to_repair,
    list_label_files,
    relative_name,
    with_images,
)
from .events import FileDone, Note, RepairDone, RepairStarted
from .outfolder import Journal, OutputLock, clear_stale_temporaries, mark, read_journals
from .pipeline import run_pipeline
from .preview import picture_stem
from .processes import auto_processes, repair_in_processes
from .report import merge_reports, report_name, report_rows, totals_of, write_report
from .settings import MAX_AUTO_WORKERS, ImageRow, RepairResult, RepairSettings


def repair(s: RepairSettings, progress: Callable[[object], None] | None = None) -> RepairResult:
    """Repair the labels of `s` into its output folder, in this process or several (s.processes), and write
    report.json and report.csv (report.shard-I-of-N.* under --shard) and, with s.preview, the preview page.
    A shard that finds every shard's report written joins them (merge_reports; RepairResult.joined).
    A dry run writes nothing: the result says what a run would do."""
    return _repair(s, progress or (lambda e: None), page=s.preview, join=True, lock=True)


def repair_part(s: RepairSettings, progress: Callable[[object], None]) -> RepairResult:
    """One child process's share of a repair in several (processes.py): its shard's files and report part;
    the parent holds the output folder's lock, and the preview page is the parent's to write."""
    return _repair(replace(s, processes=1), progress, page=False, join=False, lock=False)


def output_settings(s: RepairSettings, bank: Bank) -> dict:
    """The settings that shape the output files: a re-run with others would mix two kinds of output."""
    return {"bank": bank.manifest_sha256, "missing": sorted(s.missing), "ratio": s.ratio, "policy": s.policy,
            "min_confidence": s.min_confidence, "review_below": s.review_below, "find_erasures": s.find_erasures,
            "classes": bank.classes.to_dict()}


def _repair(s: RepairSettings, progress: Callable[[object], None], page: bool, join: bool, lock: bool) -> RepairResult:
    labels = Path(s.labels)
    files, companions = list_label_files(labels, s.recursive) if labels.is_dir() else ([], 0)
    s = with_images(s, files)
    out = check_settings(s, files)
    files = files_to_repair(s, files)
    bank = load_bank(s.bank)
    check_classes(s, bank, files)
    check_missing_values(s, files)
    if s.ratio is not None and s.ratio not in bank.ratios:
        nearest = bank.nearest_ratio(s.ratio)
        progress(Note(f"--ratio {s.ratio}: the bank has ratios {', '.join(f'{r:g}' for r in bank.ratios)}; "
                      f"using its nearest, {nearest:g}"))
        s = replace(s, ratio=nearest)
    device = pick_device(s.device)
    if s.dry_run:
        return _run(s, bank, device, out, files, {}, None, companions, progress, page=False, join=False)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(describe_write_error(e, out)) from None
    with OutputLock(out, s.shard) if lock else nullcontext():
        try:
            mark(out)  # before any label: a shard starting later knows the folder for labelfix's
        except OSError as e:
            raise OutputError(describe_write_error(e, out)) from None
        settings = output_settings(s, bank)
        previous = _journalled_rows(out, s, settings, whole_run=lock)
        journal = Journal(out, s.shard, settings, fresh=s.overwrite)
        try:
            return _run(s, bank, device, out, files, previous, journal, companions, progress, page, join)
        finally:
            journal.close()


def _journalled_rows(out: Path, s: RepairSettings, settings: dict, whole_run: bool) -> dict[str, dict]:
    """The rows of the files earlier runs finished in `out` with these settings (every journal's), for a
    resumed run to report as they were. Journals of other settings are a usage error, unless the run
    redoes everything (--overwrite): then a whole run deletes every journal and the old review page."""
    journals = read_journals(out)
    if s.overwrite:
        if whole_run and s.shard is None:
            for j in journals:
                j.path.unlink(missing_ok=True)
            (out / "preview.html").unlink(missing_ok=True)
        return {}
    other = [j for j in journals if j.settings != settings]
    if other:
        was = other[0].settings
        differ = [f"{k} {was.get(k)!r} -> {v!r}" for k, v in settings.items() if was.get(k) != v and k != "classes"]
        differ += ["the class list"] if was.get("classes") != settings["classes"] else []
        raise UsageError(f"{out}: written by a run with other settings ({'; '.join(differ) or 'another version'}); "
                         "--overwrite redoes every file with these, or choose another --out")
    return {name: row for j in journals for name, row in j.rows.items()}


def _run(s: RepairSettings, bank: Bank, device, out: Path, files: list[Path], previous: dict[str, dict],
         journal: Journal | None, companions: int, progress, page: bool, join: bool) -> RepairResult:
    """Repair the files earlier runs have not finished, report all of them. journal None: a dry run."""
    labels = Path(s.labels)
    rows: list[ImageRow] = []
    todo: list[Path] = []
    for f in files:
        name = relative_name(f, labels)
        old = previous.get(name)
        if old is not None and old.get("status") in ("repaired", "unchanged") and (out / name).is_file():
            rows.append(ImageRow(**{k: old.get(k) for k in (fl.name for fl in fields(ImageRow)) if k in old}))
        else:
            todo.append(f)
    resumed = len(rows)
    if journal is not None:
        names = {relative_name(f, labels) for f in todo}
        pictures = {f"preview/{picture_stem(n)}.{when}.jpg" for n in names for when in ("before", "after")}
        clear_stale_temporaries(out, names | pictures | {f"{report_name(s)}.json", f"{report_name(s)}.csv",
                                                          "preview.html"})
    cores = os.cpu_count() or 2
    processes = max(1, min(s.processes or auto_processes(len(todo), MAX_AUTO_WORKERS, cores), len(todo)))
    runtime = {"device": str(device), "precision": resolve_precision(s.precision, device), "processes": processes}
    progress(RepairStarted(len(files), len(todo), resumed, str(out), str(s.images), companions, **runtime))
    t_start = time.perf_counter()

    def record(row: ImageRow) -> None:
        if journal is not None:
            journal.append(asdict(row))
        rows.append(row)
        progress(FileDone(row))

    try:
        if processes > 1:
            threads_each = s.workers or max(1, min(MAX_AUTO_WORKERS, cores // processes))
            parts = repair_in_processes(s, processes, threads_each, progress, work=repair_part)
            rows = [row for part in parts for row in report_rows(json.loads(part.read_text()))]
            for part in parts:  # joined below into this run's report
                part.unlink()
                part.with_suffix(".csv").unlink(missing_ok=True)
        else:
            threads = torch.get_num_threads()
            # every pool thread runs its own torch ops: one intra-op thread each keeps the cores busy without
            # oversubscribing them (on a GPU the model does not need CPU threads)
            torch.set_num_threads(1)
            try:
                run_pipeline(s, bank, device, out, todo, max(2, 3 * s.batch_size), record)
            finally:
                torch.set_num_threads(threads)
    except OutputError:
        if journal is not None:  # what is done is in the journal; the report too, if it can still be written
            try:
                write_report(out, s, bank, _sorted_rows(rows, files, labels), {}, runtime)
            except OSError:
                pass
        raise

    rows = _sorted_rows(rows, files, labels)
    totals = totals_of(rows, time.perf_counter() - t_start, resumed)
    if journal is None:
        progress(RepairDone(totals))
        return RepairResult(out, rows, totals, None)
    report_path = write_report(out, s, bank, rows, totals, runtime)
    if page and s.shard is None:  # a shard's page would hide the others': the join writes it
        from .preview import write_preview_page
        write_preview_page(out, rows)
    joined = None
    if join and s.shard is not None and all((out / f"report.shard-{i}-of-{s.shard[1]}.json").exists()
                                            for i in range(s.shard[1])):
        joined = merge_reports(out)  # the last shard to finish joins them all: no extra step for a job array
    progress(RepairDone(totals))
    return RepairResult(out, rows, totals, report_path, joined)


def _sorted_rows(rows: list[ImageRow], files: list[Path], labels: Path) -> list[ImageRow]:
    order = {relative_name(f, labels): i for i, f in enumerate(files)}
    return sorted(rows, key=lambda r: order.get(r.file, len(order)))
