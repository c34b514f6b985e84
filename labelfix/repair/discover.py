"""Which files a repair reads: the label files of a folder and their images, checked before any is repaired."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from ..bank.store import Bank
from ..classes import ClassSet
from ..data import IMAGE_EXTS, PHOTO_EXTS, find_image, image_stems
from ..device import resolve_precision
from ..errors import UsageError
from ..files import unreadable_reason
from .outfolder import check_output_folder
from .settings import MAX_AUTO_WORKERS, POLICIES, RepairSettings, default_out

# Cityscapes label folders hold more than label maps: colours, instances and polygons, which are not labels to repair
CITYSCAPES_COMPANION = re.compile(r"_gt(?:Fine|Coarse)_(?:color\.png|instanceIds\.png|polygons\.json)$")


# files a dataset keeps beside its labels that are not label maps: read (classes.json) or left alone
COMPANION_SUFFIXES = (".json", ".txt", ".md", ".rst", ".csv", ".tsv", ".yaml", ".yml", ".xml", ".html", ".pdf")
COMPANION_STEMS = ("readme", "license", "licence", "notice", "changelog")


def is_companion(name: str) -> bool:
    """A file beside the labels that is not one: a Cityscapes colour map, instance ids or polygons, a
    classes.json, a README, a split list."""
    lower = name.lower()
    return bool(CITYSCAPES_COMPANION.search(name)) or lower.endswith(COMPANION_SUFFIXES) \
        or lower.split(".")[0] in COMPANION_STEMS


def list_label_files(labels: Path, recursive: bool = False) -> tuple[list[Path], int]:
    """The entries of the folder (and with `recursive`, of its subfolders) to repair, in the order of their
    names, and how many companions of its labels (is_companion) were left out of them. Every entry that is
    not a folder is listed, unreadable ones too (a broken link, a FIFO): repair reports why each cannot be
    read. Hidden files and folders are not looked at."""
    if recursive:
        files = []
        for folder, subfolders, names in os.walk(labels):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            files += [Path(folder) / n for n in names if not n.startswith(".")]
        files = sorted((p for p in files if not p.is_dir()), key=lambda p: relative_name(p, labels))
    else:
        files = sorted(p for p in labels.iterdir() if not p.name.startswith(".") and not p.is_dir())
    labels_only = [p for p in files if not is_companion(p.name)]
    return labels_only, len(files) - len(labels_only)


def relative_name(path: Path, labels: Path) -> str:
    """A label's name in the report and the output folder: its path under LABELS ('a.png', or with
    --recursive 'frankfurt/a.png')."""
    return path.relative_to(labels).as_posix()


def images_folder_candidates(labels: Path) -> list[Path]:
    """Where the common layouts keep the images of a folder of labels, in the order looked at: VOC
    (SegmentationClass beside JPEGImages), images/ beside labels/, ADE20K (annotations/training beside
    images/training), Cityscapes (gtFine/val/frankfurt beside leftImg8bit/val/frankfurt; gtFine/val and
    gtFine, for --recursive, beside leftImg8bit/val and leftImg8bit), and the labels folder itself."""
    labels = Path(labels)
    parent, grand = labels.parent, labels.parent.parent
    return [parent / "JPEGImages", parent / "images", grand / "images" / labels.name,
            grand / "JPEGImages" / labels.name, grand.parent / "leftImg8bit" / parent.name / labels.name,
            grand / "leftImg8bit" / labels.name, parent / "leftImg8bit", labels]


def holds_images_of(folder: Path, labels: list[Path], root: Path) -> bool:
    """Whether `folder` holds the image of one of `labels` (a label is not its own image), the image of a
    label in a subfolder of `root`, the labels' folder, looked for in that subfolder of `folder`."""
    return any(find_image(folder / label.parent.relative_to(root), label.stem) not in (None, label)
               for label in labels)


def guess_images_folder(labels: Path, recursive: bool = False, files: list[Path] | None = None) -> Path | None:
    """The first of `images_folder_candidates` that holds the image of a label of the folder (the first few
    labels are tried; with `recursive`, of its subfolders too, in the same subfolders), or None. files: the
    folder's `list_label_files`, if the caller has them."""
    labels = Path(labels)
    files = list_label_files(labels, recursive)[0] if files is None else files
    first = [f for f in files if f.suffix.lower() == ".png"][:8]
    for folder in images_folder_candidates(labels):
        if folder.is_dir() and holds_images_of(folder, first, labels):
            return folder
    return None


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


def files_to_repair(s: RepairSettings, files: list[Path]) -> list[Path]:
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
