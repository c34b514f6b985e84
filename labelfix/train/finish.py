"""After the models are trained (`finish_bank`): where there is a background class, the learned background bias
of holes (model/extent.py) is fitted on the model's own output; each repair mode is calibrated
(train/calibrate.py); then the boundary refiner (model/refiner.py) is fitted on the calibrated bank's repairs
and kept for the modes it improves, and its second pass on the boundaries the first leaves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..bank.manifest import REFINER_PASSES, Manifest, update_manifest
from ..bank.store import load_bank, save_weights
from ..classes import ClassSet
from ..data import load_pair
from ..device import fit_threads_to_load
from ..inference.finish import finish_labels
from ..inference.prepare import prepare, resize_label
from ..inference.run import run_model
from ..model.extent import CORRECTION_SHARE, hole_samples, output_features, train_extent
from ..model.propagate import nearest_fill
from ..model.refiner import SAMPLES_PER_LABEL, train_refiner
from ..policy import REFINER_MIN_GAIN, REFINER_SECOND_MIN_GAIN
from .calibrate import MODES, calibrate_bank, measure, setting_name
from .damage import background_cells, random_blocks
from .events import Calibrated, ExtentFitted, FitStarted, RefinerFitted


def _missing_hole_cases(bank, classes: ClassSet, pairs, gen: torch.Generator, batch: int):
    """The damage the bank's small fitted models learn from: each training label with random blocks and
    with the paper's cells made missing, prepared for `--missing` repair. Yields, per `batch` labels, a
    list of (image, label, damaged label, model input, allowed) with the two holes of each label in turn."""

    for start in range(0, len(pairs), batch):
        cases = []
        for img_path, lab_path in pairs[start:start + batch]:
            image, label = load_pair(img_path, lab_path, classes)
            H, W = label.shape
            blocks = random_blocks(1, H, W, 0.3, gen)[0].numpy()
            for hole in (blocks, background_cells(label, classes.background_index)):
                damaged = np.where(hole, -1, label)
                item, allowed = prepare(image, damaged, bank, missing=damaged < 0)
                cases.append((image, label, damaged, item, allowed))
        yield cases


def fit_extent(bank_dir: Path, pairs, classes: ClassSet, device="cpu", seed: int = 0, batch: int = 16,
               share: float | None = None) -> dict:
    """Fit the learned background bias of holes (model/extent.py) on the bank's own output for training
    labels with random blocks and with the paper's cells missing, and add it to the bank
    (extent.safetensors and the manifest's `extent`). A bank without a background class gets none.
    share: of the model's correction, as model/extent.py CORRECTION_SHARE by default. Returns what it did, for the
    progress log."""

    t0 = time.time()
    bg = classes.background_index
    if bg is None:
        return {"samples": 0, "seconds": round(time.time() - t0, 1)}
    bank = load_bank(bank_dir)
    share = CORRECTION_SHARE if share is None else share
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    x, logits, truth = [], [], []
    resized = (None, None)  # (label, its truth at the model grid): a label's two holes come in turn
    for cases in _missing_hole_cases(bank, classes, pairs, gen, batch):
        items = [item for _, _, _, item, _ in cases]
        for (_, label, _, item, _), corr in zip(cases, run_model(bank, items, device, calibrated=False)):
            if resized[0] is not label:
                resized = (label, resize_label(label, bank.config.input_size))
            label_s = resized[1]
            nearest, distance = nearest_fill(item.label_in[None], with_distance=True, mend=False)
            features, with_prior = output_features(item.label_in[None], nearest, distance, corr.logits[None],
                                                   corr.prior_weight, bg, share)
            sample = hole_samples(features[0], with_prior[0], label_s, item.label_in < 0, rng)
            for out, part in zip((x, logits, truth), sample):
                out.append(part)
    extent = train_extent(torch.cat(x), torch.cat(logits), torch.cat(truth), bg, seed=seed)
    name = "extent.safetensors"
    samples = sum(len(t) for t in truth)
    update_manifest(bank_dir, extent={
        "file": name, "sha256": save_weights(extent, Path(bank_dir) / name),
        "hidden": extent.net[0].out_features, "correction_share": share, "samples": samples})
    return {"samples": samples, "seconds": round(time.time() - t0, 1)}


def fit_refiner(bank_dir: Path, pairs, val_pairs, device="cpu", seed: int = 0, batch: int = 16,
                second: bool = False) -> dict:
    """Fit the boundary refiner (model/refiner.py) on the calibrated bank's own repairs of training labels with
    random blocks and with the paper's cells made missing, then keep it for the repair modes where it
    scores at least REFINER_MIN_GAIN better on `val_pairs` (the calibration's cases, train/calibrate.py) and add
    it to the bank (refiner.safetensors and the manifest's `refiner`).

    With `second`, fit its second pass instead, on the boundaries the first leaves, for the modes the
    first applies in, kept where it gains REFINER_SECOND_MIN_GAIN (refiner-second.safetensors and
    `refiner_second`). Refitting the first drops the second, which learned from the old one's output. A
    bank without a background class, or whose training labels give no boundary to learn from, gets none.
    Returns what it did, for the progress log."""

    t0 = time.time()
    key, name = ("refiner_second", "refiner-second.safetensors") if second else ("refiner", "refiner.safetensors")
    # repairs without this pass (and what learned from it) are what it learns from
    update_manifest(bank_dir, **{k: None for k in REFINER_PASSES[REFINER_PASSES.index(key):]})
    bank = load_bank(bank_dir)
    bg = bank.classes.background_index
    # the modes it may apply in: the second pass only where the first does
    candidates = [m for m in MODES if not second or bank.refiners(m)]
    if bg is None or not candidates:
        return {"samples": 0, "modes": [], "seconds": round(time.time() - t0, 1),
                "skipped": "no background class" if bg is None else "the first pass applies in no mode"}
    x, truth = _band_samples(bank, pairs, device, seed, batch)
    if not len(x):
        return {"samples": 0, "modes": [], "seconds": round(time.time() - t0, 1)}
    refiner = train_refiner(x, truth, seed=seed)
    # where it applies: the modes it improves on the validation labels, each with its calibrated finishing
    # and the passes before it; blind repair also keeps to the calibration's limit on changed undamaged pixels
    settings = {m: [bank.finishing(m)] if m in candidates else [] for m in MODES}
    before = bank.refiners(candidates[0])  # the first pass where fitting the second, else none
    (plain, _), (refined, changes) = (measure(bank, val_pairs, settings, device, seed, refiners=use)
                                      for use in (before, before + (refiner,)))
    scores = {m: [round(measures[(m, settings[m][0])], 2) for measures in (plain, refined)]
              for m in candidates if plain[(m, settings[m][0])] is not None}
    limit = (bank.manifest.calibration or {}).get("blind_undamaged_changed_pct", {}).get("limit")
    blind_changed = max((100 * n / max(total, 1) for n, total in changes.values()), default=0.0)
    gain = REFINER_SECOND_MIN_GAIN if second else REFINER_MIN_GAIN
    modes = [m for m, (without, with_refiner) in scores.items()
             if with_refiner >= without + gain and (m != "blind" or limit is None or blind_changed <= limit)]
    update_manifest(bank_dir, **{key: {
        "file": name, "sha256": save_weights(refiner, Path(bank_dir) / name),
        "hidden": refiner.net[0].out_features, "samples": len(x), "modes": modes,
        "scores": {m: {"without": v[0], "with": v[1]} for m, v in scores.items()},
        "setting": {m: setting_name(settings[m][0]) for m in scores}, "images": len(val_pairs)}})
    return {"samples": len(x), "modes": modes, "scores": scores, "seconds": round(time.time() - t0, 1)}


def _band_samples(bank, pairs, device, seed: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the next refiner pass reads at SAMPLES_PER_LABEL band pixels of each damaged training label
    (the bank's `--missing` repairs, with the passes it has): (n, F) features and (n,) float, 1 where the
    truth is background."""

    bg = bank.classes.background_index
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    x, truth = [], []
    for cases in _missing_hole_cases(bank, bank.classes, pairs, gen, batch):
        corrections = run_model(bank, [c[3] for c in cases], device)
        for (image, label, damaged, item, allowed), corr in zip(cases, corrections):
            band_inputs = []
            finish_labels(corr, damaged, item.hidden_full, allowed, image, band_inputs=band_inputs)
            if not band_inputs:
                continue
            ys, xs, features = band_inputs[0]
            labelled = np.flatnonzero(label[ys, xs] >= 0)
            chosen = rng.choice(labelled, min(SAMPLES_PER_LABEL, len(labelled)), replace=False)
            x.append(features[torch.from_numpy(chosen)])
            truth.append(torch.from_numpy(label[ys[chosen], xs[chosen]] == bg).float())
    if not x:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(x), torch.cat(truth)


def finish_bank(out: Path, classes: ClassSet, train_pairs, val_pairs, device, calibrate_images: int, seed: int = 0,
                progress: Callable[[object], None] | None = None) -> None:
    """Fit the trained bank in `out`: the background bias of holes, each repair mode's calibration, the refiner."""
    progress = progress or (lambda e: None)
    cpu = torch.device(device).type == "cpu"

    def start(what: str, images: int) -> None:
        if cpu:  # each step's threads follow the machine's load (device.fit_threads_to_load)
            fit_threads_to_load()
        progress(FitStarted(what, images))

    if classes.background_index is not None:
        start("extent", len(train_pairs))
        progress(ExtentFitted(**fit_extent(out, train_pairs, classes, device, seed=seed)))
    if calibrate_images:
        start("calibrate", min(calibrate_images, len(val_pairs)))
        scores = calibrate_bank(out, val_pairs[: calibrate_images], device, seed=seed, progress=progress)
        progress(Calibrated(scores, Manifest.read(out).calibration["chosen"]))
        if classes.background_index is not None:
            for second in (False, True):
                start("refiner-second" if second else "refiner", len(train_pairs))
                progress(RefinerFitted(second, **fit_refiner(out, train_pairs, val_pairs[: calibrate_images], device,
                                                             seed=seed, second=second)))
