"""Confusion matrices and (PA-)mIoU, dataset-level: sum the matrices, then compute IoU per class."""

from __future__ import annotations

import numpy as np
import torch


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
              where: torch.Tensor | None = None) -> torch.Tensor:
    """(K, K) int64 counts, rows = truth, cols = prediction, over pixels with target >= 0 (and `where`)."""
    valid = target >= 0
    if where is not None:
        valid = valid & where
    t = target[valid].long()
    p = pred[valid].long()
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes).cpu()


def iou_per_class(conf) -> np.ndarray:
    """IoU per class; NaN for classes absent from both truth and prediction (they do not count)."""
    c = np.asarray(conf, dtype=np.float64)
    tp = np.diag(c)
    denom = c.sum(0) + c.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def mean_iou(conf) -> float:
    """Mean IoU in percent over classes present in truth or prediction."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(conf) -> float:
    c = np.asarray(conf, dtype=np.float64)
    return float(np.trace(c) / max(c.sum(), 1) * 100)
