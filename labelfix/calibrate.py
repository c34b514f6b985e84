"""After training: how much of the model's correction to trust, per repair mode.

A bank that learned little for some kind of damage must not do worse than the propagation it starts
from. For each repair mode this measures, on validation images, the weight of the model's correction
(0 = nearest-label fill, 1 = the model as trained, 2 = amplified), with or without the image-guided finishing
filter (guided.py), that scores best, and writes both to the manifest.

  missing  ~30% of each label in random blocks made missing: mIoU over the filled pixels
  replace  the paper's protocol at each bank ratio (background-first): mIoU over the removed pixels
  blind    blocks set to background or objects dropped to background: mIoU over the whole label,
           so that a change that breaks good pixels counts as much as one that mends bad ones
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .bank import MANIFEST, atomic_write_bytes, load_bank
from .damage import random_blocks
from .data import load_pair
from .metrics import confusion, mean_iou
from .predict import finish_labels, prepare, run_model

# above 1 the correction is amplified: blind repair, where the prior keeps the suspect background's
# label, gains from it (VOC: blocks set to background 27 -> 36 mIoU at 1.5)
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
GUIDED = (False, True)
MODES = ("missing", "replace", "blind")


def setting_name(weight: float, guided: bool) -> str:
    """How a calibration score is keyed in the manifest: "0.75", or "0.75+guided"."""
    return f"{weight}+guided" if guided else str(weight)


def _cases(label: np.ndarray, mode: str, ratios, bg, gen: torch.Generator):
    """(damaged label, missing mask or None, ratio or None, policy, scored pixels) per case of a mode."""
    H, W = label.shape
    blocks = random_blocks(1, H, W, 0.3, gen)[0].numpy()
    if mode == "missing":
        damaged = np.where(blocks, -1, label)
        return [(damaged, damaged < 0, None, "fill", blocks)]
    if mode == "replace":
        return [(label, None, r, "replace", None) for r in ratios]
    out = []
    if bg is not None:
        out.append((np.where(blocks, bg, label), None, None, "fill", np.ones_like(blocks)))
        objects = [c for c in np.unique(label) if c >= 0 and c != bg]
        keep = torch.rand(len(objects), generator=gen).numpy() < 0.5
        dropped = np.isin(label, [c for c, k in zip(objects, keep) if not k])
        out.append((np.where(dropped, bg, label), None, None, "fill", np.ones_like(blocks)))
    return out


def calibrate_bank(bank_dir: Path, pairs, device="cpu", seed: int = 0, progress=None) -> dict:
    """Measure and store the correction weight of each repair mode; returns {mode: {weight: mIoU}}.

    Modes with nothing to measure are left out and keep the default weight, 1. progress, if given, is
    called with {"event": "calibrate-step", "done", "total"} after each image."""
    bank = load_bank(bank_dir)
    bank.manifest.pop("correction_weight", None)  # measure the model as trained
    bank.manifest.pop("guided_filter", None)
    K, bg = bank.classes.num_classes, bank.classes.background_index
    gen = torch.Generator().manual_seed(seed)
    conf = {(m, w, g): torch.zeros(K, K, dtype=torch.long) for m in MODES for w in WEIGHTS for g in GUIDED}
    for done, (img_path, lab_path) in enumerate(pairs, 1):
        image, label = load_pair(img_path, lab_path, bank.classes)
        truth = torch.from_numpy(label)
        for mode in MODES:
            for damaged, missing, ratio, policy, scored in _cases(label, mode, bank.ratios, bg, gen):
                mi, allowed = prepare(image, damaged, bank, missing=missing, ratio=ratio, policy=policy)
                corr, = run_model(bank, [mi], device, calibrated=False)
                where = torch.from_numpy(mi.removed_full if scored is None else scored)
                for w in WEIGHTS:
                    for g in GUIDED:
                        pred, _ = finish_labels(corr.scaled(w, g), damaged, mi.hidden_full, allowed, image)
                        conf[(mode, w, g)] += confusion(torch.from_numpy(pred), truth, K, where)
        if progress:
            progress({"event": "calibrate-step", "done": done, "total": len(pairs)})
    # a mode with no case (blind repair of a bank without a background class) keeps the whole correction
    measured = [m for m in MODES if conf[(m, 0.0, False)].sum() > 0]
    scores = {m: {setting_name(w, g): round(mean_iou(conf[(m, w, g)]), 2) for w in WEIGHTS for g in GUIDED}
              for m in measured}
    # the best score wins; on a tie the plainer setting (no filter), then the weight nearest 1 (as trained)
    best = {m: max(((w, g) for w in WEIGHTS for g in GUIDED),
                   key=lambda wg: (scores[m][setting_name(*wg)], not wg[1], -abs(wg[0] - 1.0))) for m in measured}
    manifest = json.loads((Path(bank_dir) / MANIFEST).read_text())
    manifest["correction_weight"] = {m: w for m, (w, _) in best.items()}
    manifest["guided_filter"] = {m: g for m, (_, g) in best.items()}
    manifest["calibration"] = {"images": len(pairs), "scores": scores}
    atomic_write_bytes(Path(bank_dir) / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return scores
