"""Fit a label to the model grid: what is removed, what the model may see, what may change."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..bank.store import Bank
from ..model.masking import background_pixels, expand_mask, hole_patches, patch_mean, strategy_mask


@dataclass
class ModelInput:
    """One label prepared for the model (tensors at the model size S) and the pixel maps back."""
    image: torch.Tensor        # (3, S, S) float in [0, 1]
    label_in: torch.Tensor     # (S, S) long, -1 = unknown to the model
    removed: torch.Tensor      # (L,) bool, 1 = removed patch
    editable: torch.Tensor     # (S, S) bool, the pixels the model decides
    removed_full: np.ndarray   # (H, W) bool: removed patches at the original size
    hidden_full: np.ndarray    # (H, W) bool: pixels whose label the prior must not use
    ratio: float               # the bank's mask ratio of this label (blind: how many patches were removed)
    mode: str = "missing"      # missing | replace | blind: which calibrated correction weight applies
    encoder_image: torch.Tensor | None = None  # (3, E, E) in [0, 1]: the image for the bank's image encoder


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
    """(S, S) bool at the model grid -> (H, W) bool at the original size (nearest).

    torch's nearest interpolation, as a gather: the source of output row i is floor(i * (S / H)), all in
    float32 as torch computes it (a gather of bytes is 4x cheaper than interpolating floats)."""
    small = mask_small.numpy()
    rows, cols = (_nearest_source(n, size) for n, size in zip(small.shape, shape))
    return small[rows[:, None], cols[None]]


def _nearest_source(n: int, size: int) -> np.ndarray:
    """(size,) the source index of each output index of torch's nearest resize from n to size."""
    scale = np.float32(n) / np.float32(size)
    return np.minimum(np.floor(np.arange(size, dtype=np.float32) * scale).astype(np.int64), n - 1)


def background_fraction(label: np.ndarray, background_index: int | None) -> float:
    """Share of pixels that are background or unlabelled (label < 0)."""
    return float(background_pixels(label, background_index).mean())


def prepare(image: np.ndarray, label: np.ndarray, bank: Bank, *, missing: np.ndarray | None = None,
            blind: bool = False, ratio: float | None = None, strategy: str = "background-first",
            policy: str = "fill") -> tuple[ModelInput, np.ndarray]:
    """Decide what to remove and what the model may see.

    image (H, W, 3) uint8; label (H, W) int64 model indices (-1 = unlabelled).
    missing (H, W) bool: explicit missing pixels, all of them filled; the patches holding holes of them
    are removed (masking.hole_patches: thin lines such as VOC's outlines stay in visible patches).
    Otherwise (blind) `ratio` of the patches are removed with `strategy` (default background-first).
    `blind` with `missing` (blind fill that found erasures): the erasures are missing, and the rest of the
    label is repaired as blind fill (policy fill): the patches blind fill would remove are removed as well,
    and their background may change.
    Returns the model input and `allowed` (H, W) bool: the pixels the result may change.
    """
    cfg = bank.config
    S, p, bg = cfg.input_size, cfg.patch_size, bank.classes.background_index
    H, W = label.shape
    label_s = resize_label(label, S)
    suspect_background = missing is None or blind
    if suspect_background:  # blind: the most background-heavy patches, as many as the label's background share
        suspect_ratio = bank.nearest_ratio(background_fraction(label, bg)) if ratio is None else ratio
        suspect = strategy_mask(strategy, patch_mean(background_pixels(label_s, bg)[None], p), suspect_ratio)[0]
    if missing is None:
        removed, used_ratio = suspect, suspect_ratio
    else:  # the holes decide what is removed; the ratio reported is the nearest to their share
        holes = hole_patches(resize_any(missing, S)[None], p)[0]
        removed = holes | suspect if blind else holes
        used_ratio = bank.nearest_ratio(float(holes.float().mean())) if ratio is None else ratio
    removed_px = expand_mask(removed[None], cfg.grid, p)[0]  # (S, S)
    removed_full = to_original_size(removed_px, (H, W))
    if policy == "replace":
        # the paper's behaviour: removed patches are reconstructed whole
        hidden_s = removed_px | (label_s < 0)
        hidden_full = removed_full | (label < 0 if missing is None else missing)
        editable_s, allowed = hidden_s, hidden_full
    elif not suspect_background:
        # explicit missing values: unknown, and the only pixels that change (fill)
        # at the model size the holes are resized like the labels in training (nearest); every patch
        # holding a hole is removed all the same, and the result is decided at the original size
        hidden_s, hidden_full = label_s < 0, missing
        editable_s, allowed = hidden_s, hidden_full
    elif missing is None:
        # blind fill: background and unlabelled pixels of removed patches are suspect; unlabelled ones
        # are unknown, background ones keep their label in the prior, and the model may change either
        hidden_s, hidden_full = label_s < 0, label < 0
        editable_s, allowed = removed_px & background_pixels(label_s, bg), removed_full & background_pixels(label, bg)
    else:
        # blind fill with erasures: those are filled, and the background of removed patches is suspect as above
        hidden_s, hidden_full = label_s < 0, missing | (label < 0)
        editable_s = hidden_s | (removed_px & background_pixels(label_s, bg))
        allowed = hidden_full | (removed_full & background_pixels(label, bg))
    label_in = torch.where(hidden_s, torch.full_like(label_s, -1), label_s)
    mode = "missing" if missing is not None else ("replace" if policy == "replace" else "blind")
    encoder_image = resize_image(image, cfg.encoder_size) if cfg.encoder != "none" else None
    mi = ModelInput(resize_image(image, S), label_in, removed, editable_s, removed_full, hidden_full, used_ratio, mode,
                    encoder_image)
    return mi, allowed
