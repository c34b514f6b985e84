"""Inference shared by repair and bench: fit a label to the model grid, run the bank, map back.

All removal decisions are made at the model's grid; pixel decisions at the original size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .bank import Bank
from .masking import expand_mask, patch_mean, patches_touching, strategy_mask
from .device import autocast
from .fuse import one_hot
from .guided import ImageGuide, pixel_grid, sample_at
from .propagate import nearest_fill


@dataclass
class ModelInput:
    """One label prepared for the model (tensors at the model size S) and the pixel maps back."""
    image: torch.Tensor        # (3, S, S) float in [0, 1]
    label_in: torch.Tensor     # (S, S) long, -1 = unknown to the model
    removed: torch.Tensor      # (L,) bool, 1 = removed patch
    editable: torch.Tensor     # (S, S) bool, the pixels the model decides
    removed_full: np.ndarray   # (H, W) bool: removed patches at the original size
    hidden_full: np.ndarray    # (H, W) bool: pixels whose label the prior must not use
    ratio: float               # the bank model that handles this label
    mode: str = "missing"      # missing | replace | blind: which calibrated correction weight applies


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, S, S) float in [0, 1]."""
    img = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0


def resize_label(label: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) int (-1 allowed) -> (S, S) long, nearest."""
    lab = Image.fromarray(label.astype(np.int32)).resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.array(lab, dtype=np.int64))


def resize_any(mask: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) bool -> (S, S) bool, True where any source pixel under a model pixel is set (small holes survive)."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.adaptive_max_pool2d(m, size)[0, 0] > 0 if min(mask.shape) >= size else \
        F.interpolate(m, size=(size, size), mode="nearest")[0, 0] > 0


def to_original_size(mask_small: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """(S, S) bool at the model grid -> (H, W) bool at the original size (nearest)."""
    m = F.interpolate(mask_small[None, None].float(), size=shape, mode="nearest")[0, 0]
    return m.numpy() > 0.5


def background_fraction(label: np.ndarray, background_index: int | None) -> float:
    """Share of pixels that are background or unlabelled (label < 0)."""
    bg = label < 0
    if background_index is not None:
        bg |= label == background_index
    return float(bg.mean())


def prepare(image: np.ndarray, label: np.ndarray, bank: Bank, *, missing: np.ndarray | None = None,
            ratio: float | None = None, strategy: str = "background-first", policy: str = "fill") -> tuple[ModelInput, np.ndarray]:
    """Decide what to remove and what the model may see.

    image (H, W, 3) uint8; label (H, W) int64 model indices (-1 = unlabelled).
    missing (H, W) bool: explicit missing pixels; then exactly the patches holding them are removed.
    Otherwise (blind) `ratio` of the patches are removed with `strategy` (default background-first).
    Returns the model input and `allowed` (H, W) bool: the pixels the result may change.
    """
    cfg = bank.config
    S, p, bg = cfg.input_size, cfg.patch_size, bank.classes.background_index
    H, W = label.shape
    label_s = resize_label(label, S)
    if missing is not None:
        missing_s = resize_any(missing, S)
        removed = patches_touching(missing_s[None], p)[0]
        used_ratio = bank.nearest_ratio(float(removed.float().mean())) if ratio is None else ratio
    else:
        frac = background_fraction(label, bg)
        used_ratio = bank.nearest_ratio(frac) if ratio is None else ratio
        bg_s = (label_s < 0) | (label_s == bg) if bg is not None else label_s < 0
        bg_frac = patch_mean(bg_s[None], p)
        removed = strategy_mask(strategy, bg_frac, used_ratio)[0]
    removed_px = expand_mask(removed[None], cfg.grid, p)[0]  # (S, S)
    removed_full = to_original_size(removed_px, (H, W))
    if missing is not None:
        # explicit missing values: unknown, and the only pixels that change (fill)
        # at the model size the holes are resized like the labels in training (nearest); every patch
        # holding a hole is removed all the same, and the result is decided at the original size
        hidden_s = label_s < 0 if policy == "fill" else removed_px | (label_s < 0)
        hidden_full = missing if policy == "fill" else removed_full | missing
        editable_s, allowed = hidden_s, hidden_full
    elif policy == "replace":
        # the paper's behaviour: removed patches are reconstructed whole
        hidden_s = removed_px | (label_s < 0)
        hidden_full = removed_full | (label < 0)
        editable_s, allowed = hidden_s, hidden_full
    else:
        # blind fill: background and unlabelled pixels of removed patches are suspect; unlabelled ones
        # are unknown, background ones keep their label in the prior, and the model may change either
        bg_full = (label < 0) | (label == bg) if bg is not None else label < 0
        bg_small = (label_s < 0) | (label_s == bg) if bg is not None else label_s < 0
        hidden_s, hidden_full = label_s < 0, label < 0
        editable_s, allowed = removed_px & bg_small, removed_full & bg_full
    label_in = torch.where(hidden_s, torch.full_like(label_s, -1), label_s)
    mode = "missing" if missing is not None else ("replace" if policy == "replace" else "blind")
    mi = ModelInput(resize_image(image, S), label_in, removed, editable_s, removed_full, hidden_full, used_ratio, mode)
    return mi, allowed


@dataclass
class Correction:
    """The model's verdict on one label, at the model grid, to be finished at the original size."""
    logits: torch.Tensor       # (K, S, S): the model's logits minus the prior term, times the mode's weight
    prior_weight: float        # weight of the one-hot nearest-label prior the model adds to its logits
    reach: float               # at the model grid, the farthest any pixel is from a known pixel
    guided: bool = False       # finish with the image-guided filter (guided.py)

    def scaled(self, weight: float, guided: bool | None = None) -> "Correction":
        return Correction(self.logits * weight, self.prior_weight, self.reach,
                          self.guided if guided is None else guided)


@torch.no_grad()
def run_model(bank: Bank, items: list[ModelInput], device, calibrated: bool = True) -> list[Correction]:
    """The model's correction to the prior, per item; items are grouped by ratio.

    The nearest-label prior term is taken out here and added back at the original size by
    `finish_labels`, so labels keep full-resolution detail where the model does not disagree. The
    correction is scaled by the bank's calibrated weight for the item's repair mode (calibrate.py),
    unless `calibrated` is False.
    """
    out: list = [None] * len(items)
    for ratio in sorted({it.ratio for it in items}):
        idx = [i for i, it in enumerate(items) if it.ratio == ratio]
        model = bank.model(ratio, device)
        image = torch.stack([items[i].image for i in idx]).to(device)
        label = torch.stack([items[i].label_in for i in idx]).to(device)
        removed = torch.stack([items[i].removed for i in idx]).to(device)
        editable = torch.stack([items[i].editable for i in idx]).to(device)
        nearest = nearest_fill(label, with_distance=True)  # computed once: the model's input and its prior
        with autocast(torch.device(device)):
            logits = model(image, label, removed, editable, nearest=nearest).float()
        scale = 0.0
        if model.prior_scale is not None:
            scale = float(model.prior_scale)
            logits = logits - scale * one_hot(nearest[0], model.cfg.num_classes)
        logits = logits.cpu()
        reach = nearest[1].flatten(1).amax(1).cpu()  # (B,)
        for j, i in enumerate(idx):
            weight = bank.correction_weight(items[i].mode) if calibrated else 1.0
            guided = bank.guided_filter(items[i].mode) if calibrated else False
            out[i] = Correction(logits[j] * weight, scale, float(reach[j]), guided)
    return out


def finish_labels(correction: Correction, label: np.ndarray, hidden: np.ndarray, allowed: np.ndarray,
                  image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class and confidence per pixel at the original size: (H, W) long and (H, W) float.

    label (H, W) model indices; hidden (H, W) bool: pixels the prior must not use; allowed (H, W) bool:
    the pixels being decided. There, logits = upsampled model correction + prior weight * one-hot(the
    full-resolution nearest known label); elsewhere the label is returned as it is, with confidence 1.
    With `correction.guided` and the image (H, W, 3) uint8, the class probabilities are finished by
    the image-guided filter (guided.py), so boundaries inside holes follow the image's edges.
    """
    H, W = label.shape
    pred = label.copy()
    conf = np.ones((H, W), np.float32)
    if not allowed.any():
        return pred, conf
    where = torch.from_numpy(allowed)
    grid = pixel_grid(where)  # shared by the upsampling here and the guided filter
    logits = sample_at(correction.logits, grid)  # (K, N): only the pixels being decided
    nearest = None
    if correction.prior_weight or (correction.guided and image is not None):
        # every pixel is within `reach` model pixels of a known one; at full size that bounds the
        # search (plus a cell and a half for the model grid's coarser sampling of the holes)
        cell = max(H, W) / correction.logits.shape[-1]
        bound = (correction.reach + 1.5) * cell + 2
        known_label = torch.from_numpy(np.where(hidden, -1, label))[None]
        # at full size the rare near-tie the mending passes would settle does not matter: skip them
        nearest = nearest_fill(known_label, max_distance=bound, mend=False)[0]  # (H, W)
    logits = logits.t().contiguous()  # (N, K): reductions over classes run along memory
    if correction.prior_weight:
        logits[torch.arange(logits.shape[0]), nearest[where]] += correction.prior_weight
    probs = logits.softmax(1)  # (N, K)
    c, p = probs.max(1)
    if correction.guided and image is not None:
        c, p = _guided_finish(probs, p, nearest, where, grid, image)
    pred[allowed] = p.numpy()
    conf[allowed] = c.numpy()
    return pred, conf


def _guided_finish(probs: torch.Tensor, best: torch.Tensor, nearest: torch.Tensor, where: torch.Tensor,
                   grid: torch.Tensor, image: np.ndarray):
    """Guided-filter the class maps of the classes in play; -> (confidence, class) per decided pixel.

    probs (N, K) at the decided pixels and best (N,) their most probable class; nearest (H, W) the
    nearest known label; where (H, W) bool and grid its `pixel_grid`; image (H, W, 3) uint8.
    """
    # only classes that are known nearby or that the model proposes take part (usually 2 to 5)
    K = probs.shape[1]
    in_play = (torch.bincount(nearest.flatten(), minlength=K) > 0) | (torch.bincount(best, minlength=K) > 0)
    present = torch.nonzero(in_play)[:, 0]  # (C,)
    slot = torch.full((K,), -1, dtype=torch.long)
    slot[present] = torch.arange(len(present))
    known = torch.zeros(len(present), *nearest.shape).scatter_(0, slot[nearest][None], 1.0)  # (C, H, W) one-hot
    rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0  # (3, H, W)
    guide = ImageGuide(rgb, where, grid=grid)
    maps = known.clone()
    maps[:, where] = probs[:, present].t()
    pick = guide.filter(maps).max(0).indices  # (N,); max is faster than argmax here
    # a second pass over the first pass's hard decisions settles boundaries further from the known
    # labels (VOC val, labelfix bench: +0.3 / +1.8 / +1.0 PA-mIoU at ratios 0.3 / 0.5 / 0.7; about
    # neutral on erased blocks)
    known[:, where] = F.one_hot(pick, len(present)).t().float()
    chosen = present[guide.filter(known).max(0).indices]  # (N,)
    # the confidence stays the model's probability for the class chosen
    return probs.gather(1, chosen[:, None])[:, 0], chosen
