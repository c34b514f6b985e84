"""The class-weighted cross-entropy of paper eq. 10-12.

eq. 10: w_i = 1 - 1 / (1 + beta * exp(-(x_i - E(x)) / (V(x) + xi))^gamma), x_i = class i's pixel share.
eq. 11-12: the per-pixel cross-entropy weighted by w of the pixel's true class, summed and divided by
the sum of those weights; pixels with the ignore value are excluded.

Decisions: V(x) is the standard deviation of the shares (with the variance, the weights depend on the
unit the shares are in); beta and gamma are fixed settings; the shares come from the training labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_weights(shares: torch.Tensor, beta: float = 1.0, gamma: float = 0.5, xi: float = 1e-6) -> torch.Tensor:
    """(K,) class pixel shares -> (K,) weights in (0, 1); frequent classes weigh less."""
    shares = shares.float()
    z = (shares - shares.mean()) / (shares.std(unbiased=False) + xi)
    return 1.0 - 1.0 / (1.0 + beta * torch.exp(-z) ** gamma)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None,
                           ignore_index: int = -1) -> torch.Tensor:
    """logits (B, K, H, W), target (B, H, W) long with ignore_index excluded -> scalar.

    loss = sum_n w_{y_n} * CE_n / sum_n w_{y_n} over the pixels that count (eq. 11-12).
    Returns 0 (with a gradient path) when no pixel counts.
    """
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=None if weights is None else weights.float(),
                           ignore_index=ignore_index, reduction="mean")
