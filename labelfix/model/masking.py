"""The mask selector: which patches are removed before the encoder (1 = removed).

Pure, seedable functions on tensors; nothing here knows about the network. A patch's
"background fraction" is the share of its pixels that are background or unlabelled, which is
what the paper ranks patches by.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STRATEGIES = ("random", "label-first", "background-first")
PAPER_MIX = (1.0, 2.0, 2.0)  # random : label-first : background-first, the paper's training mix


def patch_mean(values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Mean of a per-pixel map over each patch: (B, H, W) -> (B, L), L = (H/p)(W/p), row-major."""
    pooled = F.avg_pool2d(values.float().unsqueeze(1), patch_size)  # (B, 1, H/p, W/p)
    return pooled.flatten(1)


def background_pixels(label, background_index: int | None):
    """Background-class pixels plus unlabelled ones (label < 0): a bool tensor or array shaped as `label` (a
    tensor or a numpy array). A class set without a background class has only the unlabelled ones."""
    bg = label < 0
    if background_index is not None:
        bg = bg | (label == background_index)
    return bg


def num_removed(num_patches: int, ratio: float) -> int:
    return int(round(num_patches * min(max(ratio, 0.0), 1.0)))


def rank_mask(scores: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Remove the round(L * ratio) patches with the highest score: (B, L) -> (B, L) bool.

    Ties are broken by patch index (top-down, left-to-right) so repair is deterministic, or at random
    when a generator is given (training wants variety among equal-score patches).
    """
    B, L = scores.shape
    n = num_removed(L, ratio)
    # noise is drawn where the generator lives (the CPU in training), then moved: same draws on any device
    tie = torch.rand(B, L, generator=generator, device=generator.device).to(scores.device) if generator is not None \
        else -torch.arange(L, device=scores.device, dtype=torch.float32).expand(B, L) / L
    # Scores are fractions in [0, 1]; a tie-break below 1/(p*p) never reorders distinct fractions.
    order = torch.argsort(scores.float() * 1e4 + tie, dim=1, descending=True)
    mask = torch.zeros(B, L, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, order[:, :n], True)
    return mask


def random_mask(batch: int, num_patches: int, ratio: float, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """Remove round(L * ratio) patches chosen uniformly at random: (B, L) bool."""
    noise = torch.rand(batch, num_patches, generator=generator,
                       device=generator.device if generator is not None else None).to(device)
    return rank_mask(noise, ratio)


def background_first_mask(bg_fraction: torch.Tensor, ratio: float, generator=None) -> torch.Tensor:
    """Remove the patches with the most background (the repair strategy): (B, L) -> (B, L) bool."""
    return rank_mask(bg_fraction, ratio, generator)


def label_first_mask(bg_fraction: torch.Tensor, ratio: float, generator=None) -> torch.Tensor:
    """Remove the patches with the most object pixels: (B, L) -> (B, L) bool."""
    return rank_mask(1.0 - bg_fraction, ratio, generator)


def strategy_mask(strategy: str, bg_fraction: torch.Tensor, ratio: float, generator=None) -> torch.Tensor:
    if strategy == "random":
        return random_mask(*bg_fraction.shape, ratio, generator=generator, device=bg_fraction.device)
    if strategy == "label-first":
        return label_first_mask(bg_fraction, ratio, generator)
    if strategy == "background-first":
        return background_first_mask(bg_fraction, ratio, generator)
    raise ValueError(f"unknown mask strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def mixed_mask(bg_fraction: torch.Tensor, ratio: float, generator: torch.Generator | None = None,
               weights=PAPER_MIX) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's training mix: each sample draws a strategy with the given weights.

    Returns (mask (B, L) bool, strategy index per sample (B,) into STRATEGIES).
    """
    B, L = bg_fraction.shape
    probs = torch.tensor(weights, dtype=torch.float32)
    choice = torch.multinomial(probs, B, replacement=True, generator=generator).to(bg_fraction.device)
    masks = torch.stack([strategy_mask(s, bg_fraction, ratio, generator) for s in STRATEGIES])  # (3, B, L)
    return masks[choice, torch.arange(B, device=bg_fraction.device)], choice


def patches_touching(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Patches holding at least one flagged pixel (explicit missing values): (B, H, W) -> (B, L) bool."""
    return patch_mean(pixels, patch_size) > 0


def hole_patches(missing: torch.Tensor, patch_size: int, min_width: int = 3) -> torch.Tensor:
    """Patches holding a hole, not just a thin line of missing pixels: (B, H, W) -> (B, L) bool.

    A hole is what survives a morphological opening with a min_width-square (1 = missing): VOC's
    outlines of the ignore value are a pixel or two wide at the model's size, so a `--missing 255`
    that also covers them does not remove every patch along every object's edge. The thin lines stay
    unknown inside visible patches, as in the paper's protocol. A label whose missing pixels are all
    thin removes the patches touching them.
    """
    r = min_width // 2
    m = missing.float().unsqueeze(1)  # (B, 1, H, W)
    eroded = -F.max_pool2d(-m, min_width, 1, r)
    opened = F.max_pool2d(eroded, min_width, 1, r)[:, 0] > 0  # (B, H, W)
    holes = patches_touching(opened, patch_size)
    thin_only = ~holes.any(1, keepdim=True)  # (B, 1)
    return torch.where(thin_only, patches_touching(missing, patch_size), holes)


def expand_mask(mask: torch.Tensor, grid: int, patch_size: int) -> torch.Tensor:
    """Patch mask to pixel mask: (B, L) -> (B, grid*p, grid*p) bool."""
    B = mask.shape[0]
    m = mask.view(B, 1, grid, grid).float()
    return F.interpolate(m, scale_factor=patch_size, mode="nearest")[:, 0].bool()
