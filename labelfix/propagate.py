"""Nearest-known-label fill: the propagation floor labelfix must beat, and the model's prior.

Jump flooding (Rong & Tan 2006) on tensors: log2(size) passes of 9 neighbour looks each, so it
runs batched on CPU or GPU. It gives the label of (almost always exactly) the nearest known pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def jump_steps(size: int, max_distance: float | None = None) -> list[int]:
    """JFA's step lengths: powers of two down to 1 whose sum reaches `max_distance` (default: the grid)."""
    reach = size if max_distance is None else min(size, math.ceil(max_distance))
    step = 1
    while 2 * step - 1 < reach:  # steps step, step/2, ..., 1 reach 2 * step - 1 pixels
        step *= 2
    steps = []
    while step >= 1:
        steps.append(step)
        step //= 2
    return steps + [1]  # the extra 1-step pass mends JFA's rare misses


def nearest_seed(known: torch.Tensor, max_distance: float | None = None) -> torch.Tensor:
    """For every pixel, the (y, x) of the nearest known pixel: (B, H, W) bool -> (B, H, W, 2) long.

    Images with no known pixel at all get (-1, -1) everywhere. max_distance: a bound on any pixel's
    distance to its nearest known pixel, when the caller knows one; JFA then skips the long steps
    (a full-resolution label with small holes needs 5 passes, not 11).
    """
    B, H, W = known.shape
    dev = known.device
    yy, xx = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    pos = torch.stack([yy, xx]).float()  # (2, H, W)
    big = 1e6
    seed = torch.where(known.unsqueeze(1), pos.expand(B, 2, H, W), torch.full((B, 2, H, W), big, device=dev))
    for k in jump_steps(max(H, W), max_distance):
        padded = F.pad(seed, (k, k, k, k), value=big)  # (B, 2, H+2k, W+2k)
        best_d = ((seed - pos) ** 2).sum(1)  # (B, H, W)
        for dy in (-k, 0, k):
            for dx in (-k, 0, k):
                if dy == 0 and dx == 0:
                    continue
                cand = padded[:, :, k + dy:k + dy + H, k + dx:k + dx + W]  # (B, 2, H, W), a view
                d = ((cand - pos) ** 2).sum(1)
                better = d < best_d
                seed = torch.where(better.unsqueeze(1), cand, seed)
                best_d = torch.minimum(best_d, d)
    seed = seed.permute(0, 2, 3, 1).long()  # (B, H, W, 2)
    seed[seed >= big - 1] = -1
    return seed


def nearest_fill(label: torch.Tensor, known: torch.Tensor | None = None, fallback: int = 0,
                 with_distance: bool = False, max_distance: float | None = None):
    """Every pixel gets the label of its nearest known pixel: (B, H, W) long -> (B, H, W) long.

    known defaults to label >= 0. Images with nothing known get `fallback` everywhere.
    with_distance: also return the distance to that pixel, (B, H, W) float (H + W where nothing is known).
    max_distance: see `nearest_seed`.
    """
    if known is None:
        known = label >= 0
    B, H, W = label.shape
    seed = nearest_seed(known, max_distance)
    none = seed[..., 0] < 0
    flat = (seed[..., 0].clamp(min=0) * W + seed[..., 1].clamp(min=0)).view(B, -1)
    out = torch.gather(label.reshape(B, -1), 1, flat).view(B, H, W)
    out = torch.where(none, torch.full_like(out, fallback), out)
    if not with_distance:
        return out
    ys = torch.arange(H, device=label.device).view(1, H, 1)
    xs = torch.arange(W, device=label.device).view(1, 1, W)
    dist = ((seed[..., 0] - ys) ** 2 + (seed[..., 1] - xs) ** 2).float().sqrt()
    return out, torch.where(none, torch.full_like(dist, float(H + W)), dist)
