"""What a repair is asked to do, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..policy import REVIEW_BELOW

POLICIES = ("fill", "replace")


# Threads share one interpreter lock, which every torch op takes back when it ends: beyond a few
# threads they queue for it. On a 16-core H100 host, repairing 1,111 full-size VOC labels ran at
# 41 / 57 / 63 / 57 / 44 img/s with 2 / 3 / 4 / 6 / 8 threads, and about 33 img/s with 16.
MAX_AUTO_WORKERS = 4


@dataclass(frozen=True)
class RepairSettings:
    labels: Path
    images: Path | None = None  # None: where common layouts keep them (discover.guess_images_folder)
    out: Path | None = None
    bank: str | None = None
    missing: tuple[int, ...] = ()
    ratio: float | None = None           # None = auto: the bank ratio nearest the background fraction
    policy: str = "fill"
    min_confidence: float = 0.0
    review_below: float = REVIEW_BELOW   # flag an image whose changes (outline fills aside) are less sure on average
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
    precision: str = "auto"               # the model's: auto = bf16 on CUDA, fp32 on the CPU
    find_erasures: bool = True            # blind fill: read the outlines for erased blocks and orphaned
                                          # interiors (erasure.py) and repair them as missing
    recursive: bool = False               # the labels of LABELS' subfolders too; images and output mirror its tree
    classes: str | None = None            # a classes.json of the labels' classes, or "bank": they use the bank's


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
