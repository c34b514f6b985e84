"""`labelfix bench`: the paper's protocol on a dataset split, next to baselines on the same pixels.

For each ratio, every ground-truth label loses that share of its patches (default background-first,
at the model's grid); labelfix and each baseline fill the removed pixels at the original size, and
PA-mIoU (removed pixels only) and global mIoU are computed from dataset-level confusion matrices,
void excluded.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..bank.store import Bank, load_bank
from ..data import load_pair, open_dataset
from ..device import pick_device, resolve_precision
from ..errors import UsageError
from ..inference.finish import finish_labels
from ..inference.prepare import prepare
from ..inference.run import run_model
from ..model.masking import STRATEGIES
from .baselines import crf_available, dense_crf, leave_as_background, nearest_label
from .events import BenchBatch, BenchStarted
from .metrics import confusion, iou_per_class, mean_iou, pixel_accuracy

METRICS = ("pa-miou", "miou", "all")


@dataclass(frozen=True)
class BenchSettings:
    data: Path
    bank: str | None = None
    split: str = "val"
    ratios: tuple[float, ...] | None = None  # default: the bank's
    strategy: str = "background-first"
    device: str = "auto"
    batch_size: int = 8
    precision: str = "auto"                 # the model's: auto, fp32 or bf16 (device.resolve_precision)
    limit: int | None = None                # first N images of the split (after `skip`)
    skip: int = 0                           # leave out the first N, e.g. the labels that calibrated the bank
    crf: bool = True                         # run the dense-CRF baseline when pydensecrf2 is installed
    speed: bool = True


@dataclass
class BenchResult:
    settings: dict
    bank: dict
    data: dict
    methods: list[str]
    rows: list[dict]                        # one per (ratio, method)
    speed: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    labelfix_version: str = __version__


def _method_row(ratio, method, conf_pa, conf_all, names) -> dict:
    return {"ratio": ratio, "method": method, "pa_miou": mean_iou(conf_pa), "miou": mean_iou(conf_all),
            "pa_pixel_accuracy": pixel_accuracy(conf_pa),
            "pa_iou_per_class": {n: (None if np.isnan(v) else float(v * 100))
                                 for n, v in zip(names, iou_per_class(conf_pa))},
            "pa_confusion": np.asarray(conf_pa).tolist()}


def bench(s: BenchSettings, progress: Callable[[object], None] | None = None) -> BenchResult:
    progress = progress or (lambda e: None)
    if s.strategy not in STRATEGIES:
        raise UsageError(f"--strategy {s.strategy}: choose one of {', '.join(STRATEGIES)}")
    bank = load_bank(s.bank)
    ds = open_dataset(s.data)
    if tuple(ds.classes.names) != tuple(bank.classes.names):
        raise UsageError(f"{s.data}: its {ds.classes.num_classes} classes do not match the bank's "
                         f"{bank.classes.num_classes}; benchmark a bank trained on this class list")
    ratios = tuple(s.ratios) if s.ratios else tuple(bank.ratios)
    if any(not 0.0 < r < 1.0 for r in ratios):
        raise UsageError(f"--ratios {ratios}: each must be between 0 and 1")
    device = pick_device(s.device)
    resolve_precision(s.precision, device)  # a usage error if unknown
    if s.skip < 0:
        raise UsageError(f"--skip {s.skip}: must be 0 or more")
    pairs = ds.pairs(s.split)[s.skip:][: s.limit]
    classes = ds.classes
    K = classes.num_classes
    use_crf = s.crf and crf_available()
    methods = ["labelfix", "nearest-label", "leave-as-background"] + (["dense-crf"] if use_crf else [])
    notes = [] if use_crf else ["dense-crf skipped: install the optional extra labelfix[crf] (pydensecrf2)"]
    conf = {(r, m, w): torch.zeros(K, K, dtype=torch.long) for r in ratios for m in methods for w in ("pa", "all")}
    progress(BenchStarted(len(pairs), list(ratios), methods))
    data = [load_pair(i, lab, classes) for i, lab in pairs]
    for r in ratios:
        for start in range(0, len(data), s.batch_size):
            chunk = data[start:start + s.batch_size]
            prepared = [prepare(img, lab, bank, ratio=r, strategy=s.strategy, policy="replace") for img, lab in chunk]
            probs = run_model(bank, [mi for mi, _ in prepared], device, precision=s.precision)
            for (img, lab), (mi, _), p in zip(chunk, prepared, probs):
                unknown = mi.removed_full
                pred, _ = finish_labels(p, lab, mi.hidden_full, unknown, img)
                fills = {"labelfix": np.where(unknown, pred, lab),
                         "nearest-label": nearest_label(lab, unknown),
                         "leave-as-background": leave_as_background(lab, unknown, classes.background_index)}
                if use_crf:
                    fills["dense-crf"] = dense_crf(img, lab, unknown, K)
                t = torch.from_numpy(lab)
                u = torch.from_numpy(unknown)
                for m, f in fills.items():
                    f = torch.from_numpy(f)
                    conf[(r, m, "pa")] += confusion(f, t, K, u)
                    conf[(r, m, "all")] += confusion(f, t, K)
            progress(BenchBatch(r, min(start + s.batch_size, len(data)), len(data)))
    rows = [_method_row(r, m, conf[(r, m, "pa")], conf[(r, m, "all")], classes.names) for r in ratios for m in methods]
    speed = measure_speed(bank, data, device, s, ratios[len(ratios) // 2]) if s.speed and data else {}
    return BenchResult(
        settings={k: (str(v) if isinstance(v, Path) else v) for k, v in s.__dict__.items()},
        bank={"path": str(bank.path), "manifest_sha256": bank.manifest_sha256, "ratios": bank.ratios,
              "config": bank.config.to_dict()},
        data={"path": str(s.data), "split": s.split, "skip": s.skip, "images": len(data),
              "classes": list(classes.names)},
        methods=methods, rows=rows, speed=speed, notes=notes)


def measure_speed(bank: Bank, data, device, s: BenchSettings, ratio: float) -> dict:
    """Images/s of the model alone (prepared batches) and of the whole repair path (files in, files out)."""
    prepared = [prepare(img, lab, bank, ratio=ratio)[0] for img, lab in data[: max(s.batch_size * 4, 16)]]
    run_model(bank, prepared[: s.batch_size], device, precision=s.precision)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(prepared), s.batch_size):
        run_model(bank, prepared[i:i + s.batch_size], device, precision=s.precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    model_ips = len(prepared) / (time.perf_counter() - t0)
    # whole path: write the labels of the benchmark images to a temporary folder and repair them
    from PIL import Image

    from ..repair.run import repair
    from ..repair.settings import RepairSettings
    with tempfile.TemporaryDirectory() as tmp:
        lab_dir, img_dir = Path(tmp) / "labels", Path(tmp) / "images"
        lab_dir.mkdir()
        img_dir.mkdir()
        n = min(len(data), 64)
        for i, (img, lab) in enumerate(data[:n]):
            Image.fromarray(np.where(lab < 0, bank.classes.ignore_index, lab).astype(np.uint8)).save(
                lab_dir / f"{i:05d}.png")
            Image.fromarray(img).save(img_dir / f"{i:05d}.jpg", quality=95)
        res = repair(RepairSettings(labels=lab_dir, images=img_dir, out=Path(tmp) / "out", bank=str(bank.path),
                                    device=str(device), batch_size=s.batch_size, precision=s.precision, classes="bank"))
    return {"device": str(device), "precision": resolve_precision(s.precision, device), "batch_size": s.batch_size,
            "model_images_per_s": round(model_ips, 2), "repair_images_per_s": res.totals["images_per_s"],
            "repair_images": n, "torch_threads": torch.get_num_threads()}
