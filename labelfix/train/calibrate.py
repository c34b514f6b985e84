"""After training: how much of the model's correction to trust, per repair mode.

A bank that learned little for some kind of damage must not do worse than the propagation it starts
from. For each repair mode this measures, on validation images, the weight of the model's correction
(0 = nearest-label fill, 1 = the model as trained, 2 = amplified), with or without the image-guided finishing
filter (inference/guided.py, and its window radius) and with or without the image's colour evidence
(inference/colour.py), that scores best; then, for that setting, the bias towards the background class that
scores best: a constant, a share of the bank's learned per-pixel bias (model/extent.py), or both. It writes them to the
manifest.

  missing  ~30% of each label in random blocks made missing, and the paper's cells (the 50% most-background
           cells of a 14 x 14 grid) made missing: mIoU over the filled pixels of both
  replace  the paper's protocol at each bank ratio (background-first): mIoU over the removed pixels, per
           ratio, averaged over the ratios as `labelfix bench` reports them (pooled, the highest ratio,
           which removes the most pixels, outweighed the others: a GPU bank's boundary refiner scored
           46.7 -> 43.3 pooled on the 64 calibration labels, though it gave +6.0 / +4.6 / -3.0 PA-mIoU
           there at 0.3 / 0.5 / 0.7, and +12.6 / +4.7 / -0.1 on the 225 other val labels). Recalibrated
           so, that bank's PA-mIoU held out went 39.1 / 45.0 / 48.0 -> 45.3 / 46.9 / 46.0 (its refiner was
           still not kept: 44.4 -> 43.1 with the new setting on the 64 labels)
  blind    blocks set to background or objects dropped to background: mIoU over the whole label,
           so that a change that breaks good pixels counts as much as one that mends bad ones; and a
           setting qualifies only if it changes at most BLIND_CHANGE_LIMIT % of the undamaged pixels
           in each of the two cases (the promise of blind repair: what was right stays right)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..bank.manifest import Finishing, update_manifest
from ..bank.store import load_bank
from ..bench.metrics import confusion, mean_iou
from ..data import load_pair
from ..inference.finish import finish_labels
from ..inference.guided import RADIUS
from ..inference.prepare import prepare
from ..inference.run import run_model
from ..policy import BLIND_CHANGE_LIMIT
from .damage import background_cells, random_blocks
from .events import CalibrateStep

# above 1 the correction is amplified: blind repair, where the prior keeps the suspect background's
# label, gains from it (VOC: blocks set to background 27 -> 36 mIoU at 1.5)
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
# the guided filter: off, or on with a window radius (share of the longer side). With the colour evidence a
# narrower window does better on holes (VOC blocks 85.7 -> 87.0, paper cells 36.7 -> 37.6 at 0.05), the
# paper's protocol without it worse (PA-mIoU 37.4 -> 36.0 at ratio 0.5), so each mode picks its own
FILTERS = ((False, RADIUS), (True, RADIUS), (True, 0.05))  # (guided, radius)
# weights of the colour evidence (inference/colour.py). VOC's erased blocks want more, the paper's cells less (all val
# labels, bundled bank: 0.5 / 1 / 1.5 give blocks 85.1 / 86.7 / 87.3 and cells 40.3 / 40.0 / 38.1); 1 holds
# up on both, and each value more doubles the first pass
COLOURS = (0.0, 1.0)
# first every setting without a background bias, then the best one with each of BIASES and each of EXTENTS
SETTINGS = [Finishing(w, g, c, r) for w in WEIGHTS for g, r in FILTERS for c in COLOURS]
# added to the background logit. The prior and the filter carry objects into holes that are mostly
# background (VOC, the paper's cells: 340k background pixels made objects against 241k objects right).
# Bundled bank, 64 calibration labels: missing 74.3 -> 75.2 at 0.5, replace 38.7 -> 46.3 at 1.5, blind
# best without
BIASES = (0.5, 1.0, 1.5, 2.0, 3.0)
# shares of the bank's learned background bias (model/extent.py), tried with no constant bias and with each of
# BIASES
EXTENTS = (0.5, 0.75, 1.0, 1.25)
MODES = ("missing", "replace", "blind")


def setting_name(f: Finishing) -> str:
    """How a calibration score is keyed in the manifest: "0.75", "0.75+guided", "0.75+guided0.05+colour1.0+bg0.5",
    "...+extent1.0" (a radius other than inference/guided.py's default is named)."""
    filt = ("+guided" + ("" if f.radius == RADIUS else str(f.radius))) if f.guided else ""
    return (str(f.weight) + filt + (f"+colour{f.colour}" if f.colour else "")
            + (f"+bg{f.background_bias}" if f.background_bias else "") + (f"+extent{f.extent}" if f.extent else ""))


def _cases(label: np.ndarray, mode: str, ratios, bg, gen: torch.Generator):
    """(damaged label, missing mask or None, ratio or None, policy, scored pixels, damage) per case of a
    mode; damage: the pixels the case damaged, for blind cases (whose other pixels should not change)."""
    H, W = label.shape
    blocks = random_blocks(1, H, W, 0.3, gen)[0].numpy()
    if mode == "missing":
        out = []
        for hole in (blocks, background_cells(label, bg)):
            damaged = np.where(hole, -1, label)
            out.append((damaged, damaged < 0, None, "fill", hole, None))
        return out
    if mode == "replace":
        return [(label, None, r, "replace", None, None) for r in ratios]
    out = []
    if bg is not None:
        out.append((np.where(blocks, bg, label), None, None, "fill", np.ones_like(blocks), blocks))
        objects = [c for c in np.unique(label) if c >= 0 and c != bg]
        keep = torch.rand(len(objects), generator=gen).numpy() < 0.5
        dropped = np.isin(label, [c for c, k in zip(objects, keep) if not k])
        out.append((np.where(dropped, bg, label), None, None, "fill", np.ones_like(blocks), dropped))
    return out


def _mode_score(confs: list[torch.Tensor], mode: str) -> float | None:
    """A mode's mIoU from its cases' confusions (None if nothing was scored): the replace cases (one per
    ratio) averaged, each other mode's cases pooled."""
    confs = [c for c in confs if c.sum() > 0]
    if not confs:
        return None
    if mode == "replace":
        return sum(mean_iou(c) for c in confs) / len(confs)
    return mean_iou(sum(confs))


def measure(bank, pairs, settings: dict, device, seed: int, step=None, refiners: tuple = ()):
    """mIoU per (mode, setting) (None where the mode had nothing to score) and blind changes per
    (case, setting) for settings {mode: [setting]} (a mode with none is not run).

    The same seed draws the same damage, so two calls score the same cases. With `refiners`, every
    setting is finished with those passes of the boundary refiner (model/refiner.py)."""
    K, bg = bank.classes.num_classes, bank.classes.background_index
    gen = torch.Generator().manual_seed(seed)
    conf = {}  # (mode, setting) -> {case: (K, K) confusion}
    # blind cases: [changed, total] undamaged labelled pixels per (case index, setting)
    changes = {(c, st): [0, 0] for c in range(2) for st in settings["blind"]}
    for img_path, lab_path in pairs:
        image, label = load_pair(img_path, lab_path, bank.classes)
        truth = torch.from_numpy(label)
        for mode in MODES:
            # drawn for every mode, run or not: the same damage whatever is measured
            drawn = _cases(label, mode, bank.ratios, bg, gen)
            if not settings[mode]:
                continue
            for case, (damaged, missing, ratio, policy, scored, damage) in enumerate(drawn):
                known = damaged
                mi, allowed = prepare(image, known, bank, missing=missing, ratio=ratio, policy=policy)
                corr, = run_model(bank, [mi], device, calibrated=False, precision="fp32")
                where = torch.from_numpy(mi.removed_full if scored is None else scored)
                undamaged = None if damage is None else ~damage & (label >= 0)
                n_undamaged = 0 if undamaged is None else int(undamaged.sum())
                for st in settings[mode]:
                    finishing = corr.scaled(st)
                    finishing.refiners = refiners
                    pred, _ = finish_labels(finishing, known, mi.hidden_full, allowed, image)
                    cases = conf.setdefault((mode, st), {})
                    cases[case] = cases.get(case, 0) + confusion(torch.from_numpy(pred), truth, K, where)
                    if undamaged is not None:
                        counts = changes[(case, st)]
                        counts[0] += int((pred[undamaged] != damaged[undamaged]).sum())
                        counts[1] += n_undamaged
        if step:
            step()
    scores = {(m, st): _mode_score(list(conf.get((m, st), {}).values()), m) for m in MODES for st in settings[m]}
    return scores, changes


def calibrate_bank(bank_dir: Path, pairs, device="cpu", seed: int = 0, progress=None) -> dict:
    """Measure and store the finishing settings of each repair mode; returns {mode: {setting: mIoU}}.

    Modes with nothing to measure are left out and keep the defaults (weight 1, no filter, no colour,
    no bias). progress, if given, is called with a CalibrateStep after each image of each of the two passes."""
    bank = load_bank(bank_dir)
    bank.manifest = bank.manifest.updated(finishing={})  # measure the model as trained
    done = [0]

    def step():
        done[0] += 1
        if progress:
            progress(CalibrateStep(done[0], 2 * len(pairs)))

    measures, changes = measure(bank, pairs, {m: SETTINGS for m in MODES}, device, seed, step)
    # a mode with no case (blind repair of a bank without a background class) keeps the whole correction
    measured = [m for m in MODES if measures[(m, SETTINGS[0])] is not None]
    scores = {m: {} for m in measured}
    changed_pct = {}

    def record(measures, changes):
        for (m, st), score in measures.items():
            if m in scores:
                scores[m][setting_name(st)] = round(score, 2)
        for (c, st), (n, total) in changes.items():
            changed_pct.setdefault(setting_name(st), [0.0, 0.0])[c] = round(100 * n / max(total, 1), 3)

    def allowed_in(mode: str, st) -> bool:
        # plain nearest-label fill (weight 0, nothing else) always qualifies: it changes no labelled pixel
        return mode != "blind" or st == SETTINGS[0] or max(changed_pct[setting_name(st)]) <= BLIND_CHANGE_LIMIT

    def best_of(mode: str, settings):
        # the best score wins; on a tie the plainer setting (no filter, no colour, the default radius, no
        # biases), then the weight nearest 1
        return max((st for st in settings if allowed_in(mode, st)),
                   key=lambda st: (scores[mode][setting_name(st)], not st.guided, not st.colour, st.radius == RADIUS,
                                   not st.background_bias, not st.extent, -abs(st.weight - 1.0)))

    record(measures, changes)
    first = {m: best_of(m, SETTINGS) for m in measured}
    # the background biases on top of each mode's best setting: a second pass over the same cases
    extents = (0.0,) + EXTENTS if bank.extent() is not None else (0.0,)
    biased = {m: [replace(first[m], background_bias=b, extent=e) for b in (0.0,) + BIASES for e in extents if b or e]
              if m in measured else [] for m in MODES}
    record(*measure(bank, pairs, biased, device, seed, step))
    best = {m: best_of(m, [first[m]] + biased[m]) for m in measured}
    calibration = {"images": len(pairs), "chosen": {m: setting_name(st) for m, st in best.items()},
                   "scores": scores}
    if "blind" in measured:
        calibration["blind_undamaged_changed_pct"] = {"limit": BLIND_CHANGE_LIMIT, "blocks, objects": changed_pct}
    update_manifest(bank_dir, finishing=best, calibration=calibration)
    return scores
