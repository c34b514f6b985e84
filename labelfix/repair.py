"""`labelfix repair`: complete a folder of broken labels into a new folder, safely.

Decoding and resizing, inference (in batches) and finishing and writing run as tasks on one thread
pool and overlap; at most a few batches are in flight, so memory stays flat however large the folder is.
On machines with many cores the files are split between processes, each such a pipeline (processes.py).
Bad files become report rows with a reason; they never stop the batch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from . import __version__
from .bank import Bank, load_bank
from .classes import ClassSet, cityscapes_to_train_ids, is_cityscapes_label_ids, train_ids_to_cityscapes
from .data import (IMAGE_EXTS, PHOTO_EXTS, LabelFile, find_image, guess_images_folder, holds_images_of, image_stems,
                   images_folder_candidates, list_label_files, read_image, read_label, relative_name)
from .device import pick_device, resolve_precision
from .erasure import REVIEW_ORPHANED, find_erasures, orphaned_outline, outline_lines
from .errors import InputFileError, UsageError
from .files import FATAL_WRITE_ERRORS, OutputError, describe_write_error, unreadable_reason, write_atomic
from .outfolder import (REPORT_FORMAT, Journal, OutputLock, check_output_folder, clear_stale_temporaries, mark,
                        read_journals)
from .predict import ModelInput, background_fraction, finish_labels, prepare, run_model
from .preview import picture_stem
from .processes import auto_processes, repair_in_processes

POLICIES = ("fill", "replace")
REPORT_COLUMNS = ("file", "status", "background_fraction", "ratio", "patches_removed", "erased_pixels",
                  "orphaned_outline", "objects_filled", "pixels_changed", "classes_added", "mean_confidence",
                  "needs_review", "review_reason", "seconds", "error")


# Threads share one interpreter lock, which every torch op takes back when it ends: beyond a few
# threads they queue for it. On a 16-core H100 host, repairing 1,111 full-size VOC labels ran at
# 41 / 57 / 63 / 57 / 44 img/s with 2 / 3 / 4 / 6 / 8 threads, and about 33 img/s with 16.
MAX_AUTO_WORKERS = 4
# labels, in pixels, being prepared, inferred or finished at once: each holds about 25 bytes a pixel (the
# image, the class indices, the masks), so large labels would otherwise fill the memory (48 labels of
# 2048 x 1536 peaked at 2.4 GB). 500 x 375 labels stay bound by the batch window (3 batches ahead) instead.
PIXELS_IN_FLIGHT = 32_000_000
# a label (and its image) larger than this is refused, not repaired: one label is held whole, and its peak
# memory grows with it (144 megapixels peaked at 5.5 GB); split larger labels into tiles
MAX_LABEL_PIXELS = 50_000_000


@dataclass(frozen=True)
class RepairSettings:
    labels: Path
    images: Path | None = None  # None: where common layouts keep them (data.guess_images_folder)
    out: Path | None = None
    bank: str | None = None
    missing: tuple[int, ...] = ()
    ratio: float | None = None           # None = auto: the bank ratio nearest the background fraction
    policy: str = "fill"
    min_confidence: float = 0.0
    review_below: float = 0.7            # flag an image whose changes (outline fills aside) are less sure on average
    device: str = "auto"
    batch_size: int = 8
    preview: bool = False
    dry_run: bool = False
    overwrite: bool = False
    shard: tuple[int, int] | None = None  # (i, n): this process repairs the files with hash % n == i
    workers: int = 0                      # pipeline threads a process; 0 = one per CPU core, at most MAX_AUTO_WORKERS
    processes: int = 1                    # 0 = auto: one per MAX_AUTO_WORKERS cores, if there are files enough
                                          # (the CLI's default; a library caller opts in, since more than one
                                          # spawns processes that import its main module: see processes.py)
    precision: str = "auto"               # the model's: auto = bf16 where the device does it natively
    find_erasures: bool = True            # blind fill: read the outlines for erased blocks (erasure.py) and
                                          # dropped objects (objects.py) and repair them
    recursive: bool = False               # the labels of LABELS' subfolders too; images and output mirror its tree
    classes: str | None = None            # a classes.json of the labels' classes, or "bank": they use the bank's
                                          # (None: a classes.json beside them, or palette labels in the bank's palette)


@dataclass
class ImageRow:
    file: str
    status: str = "repaired"             # repaired | unchanged | failed
    background_fraction: float | None = None
    ratio: float | None = None
    patches_removed: int = 0
    erased_pixels: int = 0               # blind: background found cut off (erasure.py), repaired as missing
    orphaned_outline: float | None = None  # blind: share of the outline with background on both sides
    objects_filled: int = 0              # blind: pixels the label said were background, filled with an object
    pixels_changed: int = 0
    classes_added: str = ""
    mean_confidence: float | None = None
    needs_review: bool = False
    review_reason: str = ""              # why it needs review, reasons separated by '; '
    seconds: float = 0.0
    error: str = ""


@dataclass
class RepairResult:
    out: Path
    rows: list[ImageRow]
    totals: dict
    report_path: Path | None
    joined: Path | None = None  # a shard that found every shard's report done: the report.json it joined them into

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.rows)


def default_out(labels: Path) -> Path:
    labels = Path(labels).resolve()
    return labels.with_name(labels.name + "-repaired")


def _inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def shard_of(name: str, n: int) -> int:
    """Deterministic shard of a file name (the same on every machine and Python)."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") % n


def with_images(s: RepairSettings, files: list[Path]) -> RepairSettings:
    """The settings with their images folder: as given, or found where common layouts keep the images of
    the labels (unchanged, None, if there is none there). files: the labels folder's list_label_files."""
    if s.images is not None or not Path(s.labels).is_dir():
        return s
    found = guess_images_folder(Path(s.labels), s.recursive, files)
    return s if found is None else replace(s, images=found)


def check_settings(s: RepairSettings, files: list[Path]) -> Path:
    """The output folder, or a UsageError for what is wrong with the settings. files: the labels folder's
    list_label_files."""
    labels = Path(s.labels)
    if labels.is_file():
        raise UsageError(f"{labels}: a file; LABELS is the folder of the label PNGs to repair (a file alone: put "
                         "it in a folder of its own)")
    if not labels.is_dir():
        raise UsageError(f"{labels}: labels folder not found")
    check_label_folder(labels, files, s.recursive)  # before asking for images
    if s.images is None:
        looked = ", ".join(str(p) for p in images_folder_candidates(labels))
        raise UsageError(f"--images is required: no images of the labels where datasets keep them ({looked})")
    images = Path(s.images)
    if not images.is_dir():
        raise UsageError(f"{images}: images folder not found")
    out = Path(s.out) if s.out else default_out(labels)
    for src in (labels, images):
        if _inside(out, src):
            raise UsageError(f"{out}: the output folder may not be inside the input folder {src}; "
                             "labelfix never writes into its inputs")
    check_output_folder(out)
    if s.policy not in POLICIES:
        raise UsageError(f"--policy {s.policy}: choose fill or replace")
    if not 0.0 <= s.min_confidence <= 1.0:
        raise UsageError(f"--min-confidence {s.min_confidence}: must be between 0 and 1")
    if s.ratio is not None and not 0.0 < s.ratio < 1.0:
        raise UsageError(f"--ratio {s.ratio}: must be between 0 and 1, or auto")
    if s.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if s.dry_run and s.preview:
        raise UsageError("--preview draws pictures into the output folder, which a --dry-run never writes")
    for v in s.missing:
        if not 0 <= v <= 65535:
            raise UsageError(f"--missing {v}: label values are 0 to 255 (8-bit PNGs) or 0 to 65535 (16-bit); "
                             "this one can never match")
    resolve_precision(s.precision, torch.device("cpu"))  # a usage error if unknown
    if s.processes < 0:
        raise UsageError("--processes must be 0 (auto) or more")
    if s.workers < 0:
        raise UsageError(f"--workers must be 0 (one per CPU core, at most {MAX_AUTO_WORKERS}) or more")
    if s.shard is not None and not (s.shard[1] >= 1 and 0 <= s.shard[0] < s.shard[1]):
        raise UsageError(f"--shard {s.shard[0]}/{s.shard[1]}: expected I/N with 0 <= I < N")
    return out


def check_missing_values(s: RepairSettings, files: list[Path]) -> None:
    """--missing values above 255 cannot match 8-bit labels (read from the first label's header)."""
    high = [v for v in s.missing if v > 255]
    first = next((f for f in files if f.suffix.lower() == ".png" and unreadable_reason(f) is None), None)
    if not high or first is None:
        return
    try:
        with Image.open(first) as im:
            mode = im.mode
    except Exception:  # the file's own row will say why
        return
    if mode in ("P", "L", "1"):
        raise UsageError(f"--missing {high[0]}: the labels are 8-bit ({first.name} is mode {mode}, values 0 to "
                         "255); this value can never match")


def check_label_folder(labels: Path, files: list[Path], recursive: bool = False) -> None:
    """A folder without a single PNG is a wrong argument, not a batch of bad files: one usage error
    instead of an error line for each of thousands of files."""
    if any(f.suffix.lower() == ".png" for f in files):
        return
    if not files:
        folders = sum(1 for p in labels.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise UsageError(f"{labels}: no label files in the folder" + (
            f", only {folders} subfolder{'s' * (folders > 1)}; --recursive repairs theirs too"
            if folders and not recursive else ""))
    photos = [f.suffix.lower() for f in files if f.suffix.lower() in PHOTO_EXTS]
    if photos:
        raise UsageError(f"{labels}: no .png label maps, but {len(photos)} image{'s' * (len(photos) > 1)} "
                         f"({', '.join(sorted(set(photos)))}): are LABELS and --images the other way round?")
    raise UsageError(f"{labels}: no .png label maps among its {len(files)} file{'s' * (len(files) > 1)}")


def check_classes(s: RepairSettings, bank: Bank, files: list[Path]) -> None:
    """The labels must use the bank's classes, and something must say so, or the bank's classes would be
    written into another dataset's labels: `--classes bank`, a classes.json (--classes FILE, or beside or
    just above the labels) that lists the bank's classes, or palette labels in the bank's palette."""
    if s.classes == "bank":
        return
    labels = Path(s.labels)
    found = [Path(s.classes)] if s.classes else [f for f in (labels / "classes.json", labels.parent / "classes.json")
                                                  if f.is_file()]
    if found:
        user = ClassSet.from_json(found[0])
        if tuple(user.names) != tuple(bank.classes.names):
            raise UsageError(f"{found[0]}: its {user.num_classes} classes do not match the bank's "
                             f"{bank.classes.num_classes} ({', '.join(bank.classes.names[:4])}, ...); "
                             "use a bank trained on this class list (--bank; labelfix train makes one)")
        return
    first = next((f for f in files if f.suffix.lower() == ".png" and unreadable_reason(f) is None), None)
    if first is None:
        return  # no label to go by: each file's row says why
    try:
        with Image.open(first) as im:
            palette = im.getpalette() if im.mode == "P" else None
    except Exception:
        return
    K = bank.classes.num_classes
    ours = list(bank.classes.palette or [])[:3 * K]
    if palette is not None and ours and palette[:3 * K] == ours:
        return
    what = "its palette is not the bank's" if palette is not None else "index labels carry no class names"
    raise UsageError(f"{first}: nothing says these labels use the bank's {K} classes "
                     f"({', '.join(bank.classes.names[:4])}, ...): {what}, and there is no classes.json beside "
                     "them. Give --classes FILE (a classes.json of their names, ignore_index, background_index), "
                     "or --classes bank if they use the bank's list; for other classes, train a bank "
                     "(labelfix train)")


@dataclass
class _Prepared:
    row: ImageRow
    path: Path
    label: LabelFile | None = None
    index: np.ndarray | None = None      # (H, W) model indices, -1 unlabelled
    image: np.ndarray | None = None
    model_input: ModelInput | None = None
    allowed: np.ndarray | None = None
    unknown_share: float = 0.0           # of the pixels, those the model did not see labelled
    t0: float = 0.0


def _prepare_one(path: Path, s: RepairSettings, bank: Bank) -> _Prepared:
    t0 = time.perf_counter()
    labels = Path(s.labels)
    item = _Prepared(ImageRow(relative_name(path, labels)), path, t0=t0)
    try:
        if path.suffix.lower() != ".png":
            raise InputFileError(path, "is not a PNG label map (labels must be .png)")
        unreadable = unreadable_reason(path)
        if unreadable:
            raise InputFileError(path, unreadable)
        lab = read_label(path, max_pixels=MAX_LABEL_PIXELS)
        classes = bank.classes
        values = lab.values
        if is_cityscapes_label_ids(path.name):
            if classes.num_classes != 19:
                raise InputFileError(path, f"is a Cityscapes labelIds file but the bank has {classes.num_classes} "
                                           "classes, not Cityscapes' 19 trainIds")
            values = cityscapes_to_train_ids(values)
        missing = np.logical_or.reduce([lab.values == v for v in s.missing]) if s.missing else None  # isin: 10x slower
        bad = [v for v in classes.bad_values(values) if v not in s.missing]
        if bad:
            raise InputFileError(path, f"has values {bad[:8]} outside the bank's {classes.num_classes} classes "
                                       f"(0..{classes.num_classes - 1}) and ignore value {classes.ignore_index}")
        images = Path(s.images) / path.parent.relative_to(labels)  # --recursive: the same subfolder of IMAGES
        img_path = find_image(images, path.stem)
        if img_path is not None and img_path.resolve() == path.resolve():
            img_path = None  # --images is the labels folder: the label is not its own image
        if img_path is None:
            raise InputFileError(path, f"no image named {' or '.join(image_stems(path.stem))}"
                                       f"{{{','.join(IMAGE_EXTS)}}} in {images}")
        unreadable = unreadable_reason(img_path)
        if unreadable:
            raise InputFileError(img_path, unreadable)
        image = read_image(img_path, lab.values.shape)  # an image of another size fails before it is decoded
        index = classes.to_index(values)
        if missing is not None:
            index[missing] = -1
        erased = None
        if missing is None and classes.background_index is not None:
            # an outline around background: an object lost its class; a person should check the class given back
            item.row.orphaned_outline = round(orphaned_outline(index, classes.background_index), 3)
            reading_outlines = s.find_erasures and s.policy == "fill"
            # blind fill: background cut off from objects along straight edges was erased; repair it as missing
            erased = find_erasures(index, classes.background_index) if reading_outlines else None
            if erased is not None and erased.any():
                missing = erased
                item.row.erased_pixels = int(erased.sum())
        model_index = index if erased is None else np.where(erased, -1, index)  # erased: unknown to the model
        unknown = model_index < 0
        if unknown.all():
            raise InputFileError(path, "has no labelled pixel: nothing to complete it from")
        item.unknown_share = float(unknown.mean())
        item.row.background_fraction = round(background_fraction(index, classes.background_index), 4)
        mi, allowed = prepare(image, model_index, bank, missing=missing, ratio=s.ratio, policy=s.policy)
        item.label, item.index, item.image, item.model_input, item.allowed = lab, index, image, mi, allowed
        item.row.ratio = mi.ratio
        item.row.patches_removed = int(mi.removed.sum())
    except InputFileError as e:  # the label's own problem, or its image's, named
        item.row.status = "failed"
        item.row.error = e.reason if Path(e.path) == path else f"its image {e.path} {e.reason}"
    except Exception as e:  # an unexpected decoder failure is still one file's problem
        item.row.status, item.row.error = "failed", f"{type(e).__name__}: {e}"
    return item


def encode_label(values: np.ndarray, like: LabelFile) -> bytes:
    """PNG bytes in the input's mode and palette."""
    im = Image.fromarray(values.astype(like.values.dtype))
    if like.mode == "P":
        im = im.convert("P") if im.mode != "P" else im
        im.putpalette(like.palette)
    elif im.mode != like.mode and like.mode in ("L", "I;16"):
        im = im.convert(like.mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _finish_one(item: _Prepared, probs, s: RepairSettings, bank: Bank, out: Path) -> ImageRow:
    """Merge the prediction under the policy, write the label (and preview), fill the row."""
    row = item.row
    pred, conf = finish_labels(probs, item.index, item.model_input.hidden_full, item.allowed, item.image)
    allowed = item.allowed
    confident = conf >= s.min_confidence
    change = allowed & confident & (pred != item.index)
    new_values = item.label.values.copy()
    written = pred[change]
    new_values[change] = train_ids_to_cityscapes(written) if is_cityscapes_label_ids(item.path.name) else written
    row.pixels_changed = int(change.sum())
    K = bank.classes.num_classes
    before = set(np.flatnonzero(np.bincount(item.index.ravel() + 1, minlength=K + 1)[1:]).tolist())  # -1 = none
    after = set(np.flatnonzero(np.bincount(written.ravel(), minlength=K)).tolist()) if row.pixels_changed else set()
    row.classes_added = ";".join(bank.classes.names[c] for c in sorted(after - before))
    row.mean_confidence = round(float(conf[change].mean()), 4) if row.pixels_changed else None
    held_back = int((allowed & ~confident).sum())
    # filling a thin unlabelled line (an outline) is placing a boundary within it: unsure by nature, and
    # harmless; review weighs the other changes (VOC val, clean labels, blind: 112 of 289 flagged -> 51)
    unlabelled = item.index < 0
    weighed = change & ~outline_lines(unlabelled) if (change & unlabelled).any() else change
    review_confidence = float(conf[weighed].mean()) if weighed.any() else None
    reasons = []
    if review_confidence is not None and review_confidence < s.review_below:
        reasons.append(f"its changes are {review_confidence:.2f} sure on average")
    if held_back > 0.2 * max(int(allowed.sum()), 1):
        reasons.append(f"--min-confidence held back {held_back / max(int(allowed.sum()), 1):.0%} of what it "
                       "could fill")
    if (row.orphaned_outline or 0.0) >= REVIEW_ORPHANED:
        reasons.append(f"{row.orphaned_outline:.0%} of its outline has background on both sides: "
                       "objects lost their class?")
    bg = bank.classes.background_index
    if not s.missing and bg is not None:  # blind: objects found where the label says background
        filled = change & (item.index == bg) & (pred != bg) & ~item.model_input.hidden_full
        row.objects_filled = int(filled.sum())
        if row.objects_filled:
            found = sorted(set(np.flatnonzero(np.bincount(pred[filled], minlength=K)).tolist()))
            reasons.append(f"it filled {row.objects_filled} pixels the label has as background with "
                           f"{', '.join(bank.classes.names[c] for c in found)}: objects it lacked?")
    if item.unknown_share > max(bank.ratios):
        reasons.append(f"{item.unknown_share:.0%} of it was unknown, more than the bank learned to complete")
    row.needs_review = bool(reasons)
    row.review_reason = "; ".join(reasons)
    row.status = "repaired" if row.pixels_changed else "unchanged"
    if not s.dry_run:
        # the pictures first, the label last: a file whose label is written (and journalled) is done
        if s.preview:
            from .preview import write_preview_images
            write_preview_images(out / "preview", picture_stem(row.file), item.image, item.label.values,
                                 new_values, change, bank.classes)
        target = out / row.file
        if target.parent != out:
            target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, encode_label(new_values, item.label))
    row.seconds = round(time.perf_counter() - item.t0, 4)
    return row


def repair(s: RepairSettings, progress: Callable[[dict], None] | None = None) -> RepairResult:
    """Repair the labels of `s` into its output folder, in this process or several (s.processes), and write
    report.json and report.csv (report.shard-I-of-N.* under --shard) and, with s.preview, the preview page.
    A shard that finds every shard's report written joins them (merge_reports; RepairResult.joined).
    A dry run writes nothing: the result says what a run would do."""
    return _repair(s, progress or (lambda e: None), page=s.preview, join=True, lock=True)


def repair_part(s: RepairSettings, progress: Callable[[dict], None]) -> RepairResult:
    """One child process's share of a repair in several (processes.py): its shard's files and report part;
    the parent holds the output folder's lock, and the preview page is the parent's to write."""
    return _repair(replace(s, processes=1), progress, page=False, join=False, lock=False)


def output_settings(s: RepairSettings, bank: Bank) -> dict:
    """The settings that shape the output files: a re-run with others would mix two kinds of output."""
    return {"bank": bank.manifest_sha256, "missing": sorted(s.missing), "ratio": s.ratio, "policy": s.policy,
            "min_confidence": s.min_confidence, "review_below": s.review_below, "find_erasures": s.find_erasures,
            "classes": bank.classes.to_dict()}


def _repair(s: RepairSettings, progress: Callable[[dict], None], page: bool, join: bool, lock: bool) -> RepairResult:
    labels = Path(s.labels)
    files, companions = list_label_files(labels, s.recursive) if labels.is_dir() else ([], 0)
    s = with_images(s, files)
    out = check_settings(s, files)
    files = _files_to_repair(s, files)
    bank = load_bank(s.bank)
    check_classes(s, bank, files)
    check_missing_values(s, files)
    if s.ratio is not None and s.ratio not in bank.ratios:
        nearest = bank.nearest_ratio(s.ratio)
        progress({"event": "note", "message": f"--ratio {s.ratio}: the bank has ratios "
                  f"{', '.join(f'{r:g}' for r in bank.ratios)}; using its nearest, {nearest:g}"})
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


def _files_to_repair(s: RepairSettings, files: list[Path]) -> list[Path]:
    """The label files of the run (its shard's), or a usage error where the images folder cannot be right."""
    labels = Path(s.labels)
    beside = Path(s.images).resolve() == labels.resolve()  # images beside their labels: the photos are images
    if beside:
        files = [f for f in files if f.suffix.lower() not in PHOTO_EXTS]
    if beside and not holds_images_of(labels, files[:100], labels):
        raise UsageError(f"{s.images}: --images is the labels folder, and it holds no images of the labels")
    first = [f for f in files if f.suffix.lower() == ".png"][:100]
    if first and not beside and not holds_images_of(Path(s.images), first, labels):
        # the wrong folder: one usage error, not a failed row for each of thousands of labels
        raise UsageError(f"{s.images}: holds no image of the first {len(first)} labels (looked for "
                         f"{' or '.join(image_stems(first[0].stem))}{{{','.join(IMAGE_EXTS)}}}"
                         f"{' in the same subfolders' if s.recursive else ''}, ...)")
    if s.shard is not None:
        files = [f for f in files if shard_of(relative_name(f, labels), s.shard[1]) == s.shard[0]]
    return files


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
        clear_stale_temporaries(out, names | pictures | {f"{_report_name(s)}.json", f"{_report_name(s)}.csv",
                                                          "preview.html"})
    cores = os.cpu_count() or 2
    processes = max(1, min(s.processes or auto_processes(len(todo), MAX_AUTO_WORKERS, cores), len(todo)))
    runtime = {"device": str(device), "precision": resolve_precision(s.precision, device), "processes": processes}
    progress({"event": "start", "files": len(files), "todo": len(todo), "resumed": resumed,
              "out": str(out), "images": str(s.images), "companions": companions, **runtime})
    t_start = time.perf_counter()

    def record(row: ImageRow) -> None:
        if journal is not None:
            journal.append(asdict(row))
        rows.append(row)
        progress({"event": "file", "row": asdict(row)})

    try:
        if processes > 1:
            threads_each = s.workers or max(1, min(MAX_AUTO_WORKERS, cores // processes))
            parts = repair_in_processes(s, processes, threads_each, progress, work=repair_part)
            rows = [row for part in parts for row in _report_rows(json.loads(part.read_text()))]
            for part in parts:  # joined below into this run's report
                part.unlink()
                part.with_suffix(".csv").unlink(missing_ok=True)
        else:
            threads = torch.get_num_threads()
            # every pool thread runs its own torch ops: one intra-op thread each keeps the cores busy without
            # oversubscribing them (on a GPU the model does not need CPU threads)
            torch.set_num_threads(1)
            try:
                _run_pipeline(s, bank, device, out, todo, max(2, 3 * s.batch_size), record)
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
    totals = _totals(rows, time.perf_counter() - t_start, resumed)
    if journal is None:
        progress({"event": "done", "totals": totals})
        return RepairResult(out, rows, totals, None)
    report_path = write_report(out, s, bank, rows, totals, runtime)
    if page and s.shard is None:  # a shard's page would hide the others': the join writes it
        from .preview import write_preview_page
        write_preview_page(out, rows)
    joined = None
    if join and s.shard is not None and all((out / f"report.shard-{i}-of-{s.shard[1]}.json").exists()
                                            for i in range(s.shard[1])):
        joined = merge_reports(out)  # the last shard to finish joins them all: no extra step for a job array
    progress({"event": "done", "totals": totals})
    return RepairResult(out, rows, totals, report_path, joined)


def _sorted_rows(rows: list[ImageRow], files: list[Path], labels: Path) -> list[ImageRow]:
    order = {relative_name(f, labels): i for i, f in enumerate(files)}
    return sorted(rows, key=lambda r: order.get(r.file, len(order)))


def _run_pipeline(s: RepairSettings, bank: Bank, device, out: Path, todo: list[Path], window: int,
                  on_row: Callable[[ImageRow], None]) -> None:
    """Decode and prepare, infer in batches, finish and write: all on the pool, overlapped; this thread
    only hands work on.

    The model runs on the pool too: as a thread of its own it got a fair share of the cores like every
    other thread (2/3 of a core on 2 cores with 2 workers) and held the whole pipeline back; as pool
    tasks all the work is spread over the cores (on 2 cores: ~10% faster, measured A/B). At most `window`
    files are being prepared, two batches inferred and two batches finished at any time, and files are
    taken on only while those in hand hold fewer than PIXELS_IN_FLIGHT pixels (one at least).
    """
    in_flight: dict[str, int] = {}  # file name -> its pixels, from taking it on until its row is recorded

    def record(row: ImageRow):
        in_flight.pop(row.file, None)
        on_row(row)

    with ThreadPoolExecutor(s.workers or min(MAX_AUTO_WORKERS, os.cpu_count() or 2)) as pool:
        pending: deque[Future] = deque()
        finishing: deque[Future] = deque()
        it = iter(todo)

        def refill():
            while len(pending) < window and (not in_flight or sum(in_flight.values()) < PIXELS_IN_FLIGHT):
                f = next(it, None)
                if f is None:
                    return
                in_flight[relative_name(f, Path(s.labels))] = _pixels(f)
                pending.append(pool.submit(_prepare_one, f, s, bank))

        def collect(block_over: int):
            while finishing and (len(finishing) > block_over or finishing[0].done()):
                record(finishing.popleft().result())

        inferring: deque[tuple[list[_Prepared], Future]] = deque()

        def hand_over(block_over: int):
            """Send the items of batches the model has done to be finished, oldest batch first."""
            while inferring and (len(inferring) > block_over or inferring[0][1].done()):
                batch, fut = inferring.popleft()
                for item, c in zip(batch, fut.result()):
                    finishing.append(pool.submit(_finish_safely, item, c, s, bank, out))

        refill()
        while pending or inferring or finishing:
            if not pending:
                # the pixel budget is spent on files further down the line: wait for the oldest of them
                if inferring:
                    hand_over(block_over=len(inferring) - 1)
                else:
                    collect(block_over=len(finishing) - 1)
                refill()
                continue
            batch: list[_Prepared] = []
            while pending and len(batch) < s.batch_size:
                item = pending.popleft().result()
                if item.row.status == "failed":
                    item.row.seconds = round(time.perf_counter() - item.t0, 4)
                    record(item.row)
                else:
                    batch.append(item)
                refill()
            if batch:
                inferring.append((batch, pool.submit(run_model, bank, [b.model_input for b in batch], device,
                                                     precision=s.precision)))
                hand_over(block_over=1)
            collect(block_over=2 * s.batch_size)
            refill()


def _pixels(path: Path) -> int:
    """A label file's pixel count from its header (1 if unreadable: preparing it reports why)."""
    if unreadable_reason(path):
        return 1  # a FIFO would never open
    try:
        with Image.open(path) as im:
            return max(1, im.size[0] * im.size[1])
    except Exception:
        return 1


def _finish_safely(item, correction, s, bank, out) -> ImageRow:
    try:
        return _finish_one(item, correction, s, bank, out)
    except OSError as e:
        if e.errno in FATAL_WRITE_ERRORS:  # the next file would fail the same way: stop, say it once
            raise OutputError(describe_write_error(e, Path(e.filename or out))) from None
        item.row.status, item.row.error = "failed", f"cannot write output ({e})"
        return item.row


def _totals(rows: list[ImageRow], seconds: float, resumed: int = 0) -> dict:
    """What the rows add up to; `resumed` of them an earlier run finished (their rows from its journal)."""
    worked = len(rows) - resumed - sum(r.status == "failed" for r in rows)
    return {
        "files": len(rows),
        "repaired": sum(r.status == "repaired" for r in rows),
        "unchanged": sum(r.status == "unchanged" for r in rows),
        "failed": sum(r.status == "failed" for r in rows),
        "needs_review": sum(bool(r.needs_review) for r in rows),
        "pixels_changed": sum(r.pixels_changed for r in rows),
        "resumed": resumed,
        "seconds": round(seconds, 3),
        "images_per_s": round(worked / seconds, 3) if seconds > 0 and worked > 0 else 0.0,
    }


def _report_name(s: RepairSettings) -> str:
    return "report" if s.shard is None else f"report.shard-{s.shard[0]}-of-{s.shard[1]}"


def write_report(out: Path, s: RepairSettings, bank: Bank, rows: list[ImageRow], totals: dict,
                 runtime: dict | None = None) -> Path:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}
    report = {
        "format": REPORT_FORMAT,
        "labelfix_version": __version__,
        "settings": settings,
        "bank": {"path": str(bank.path), "manifest_sha256": bank.manifest_sha256, "ratios": bank.ratios},
        "runtime": runtime or {},  # the device and model precision this run used
        "totals": totals,
        "rows": [asdict(r) for r in rows],
    }
    name = _report_name(s)
    write_atomic(out / f"{name}.json", (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(out / f"{name}.csv", _csv_bytes(rows))
    return out / f"{name}.json"


def csv_cell(value) -> str | float | int:
    """A report value as a CSV cell that a spreadsheet shows and does not evaluate: text that starts like a
    formula (=, +, -, @, a tab or a carriage return) gets a leading apostrophe, as OWASP advises."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_bytes(rows) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS)
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in (asdict(r) if not isinstance(r, dict) else r).items()
                    if k in REPORT_COLUMNS})
    return buf.getvalue().encode()


def _report_rows(report: dict) -> list[ImageRow]:
    return [ImageRow(**{k: r.get(k) for k in (f.name for f in fields(ImageRow))}) for r in report["rows"]]


def merge_reports(out: Path) -> Path:
    """Join the shard reports of one output folder into report.json and report.csv, and preview.html if the
    shards drew pictures (--preview)."""
    out = Path(out)
    parts = sorted(out.glob("report.shard-*-of-*.json"))
    if not parts:
        raise UsageError(f"{out}: no shard reports (report.shard-I-of-N.json) to merge")
    by_file, first, drew, seconds = {}, None, False, 0.0
    for p in sorted(parts, key=lambda p: p.stat().st_mtime_ns):  # a file's newest row wins: parts of an
        d = json.loads(p.read_text())                            # earlier run in other shards may linger
        first = first or d
        by_file.update((r["file"], r) for r in d["rows"])
        drew |= bool(d["settings"].get("preview")) and not d["settings"].get("dry_run")
        seconds = max(seconds, d["totals"]["seconds"])
    rows = sorted(by_file.values(), key=lambda r: r["file"])
    objs = _report_rows({"rows": rows})
    report = dict(first)
    report["settings"] = dict(first["settings"], shard=None)
    report["shards"] = [p.name for p in parts]
    report["totals"] = _totals(objs, seconds)
    report["rows"] = rows
    write_atomic(out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(out / "report.csv", _csv_bytes(objs))
    if drew:  # the shards drew pictures: one page for them all
        from .preview import write_preview_page
        write_preview_page(out, objs)
    return out / "report.json"
