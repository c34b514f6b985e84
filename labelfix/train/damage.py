"""Simulated label damage: how training teaches repair, and how benchmarks score it.

Each function is pure and seedable. "unknown" pixels are the ones the model must fill; a label tensor
holds -1 where no label is known.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.masking import background_pixels


def random_blocks(batch: int, height: int, width: int, coverage: float, generator: torch.Generator,
                  min_side: float = 0.1, max_side: float = 0.35, device=None) -> torch.Tensor:
    """Rectangles dropped at random until about `coverage` of each image is covered: (B, H, W) bool.

    Drawn on the CPU (a coverage check per rectangle would stall a GPU), then moved to `device`."""
    out = torch.zeros(batch, height, width, dtype=torch.bool)
    for b in range(batch):
        for _ in range(64):
            if out[b].float().mean() >= coverage:
                break
            r = torch.rand(4, generator=generator).tolist()
            h = max(2, int(height * (min_side + (max_side - min_side) * r[0])))
            w = max(2, int(width * (min_side + (max_side - min_side) * r[1])))
            y, x = int((height - h) * r[2]), int((width - w) * r[3])
            out[b, y:y + h, x:x + w] = True
    return out.to(device)


def drop_classes(label: torch.Tensor, background_index: int | None, share: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Relabel about `share` of each image's object classes as background (or unlabelled):
    (B, H, W) bool of dropped pixels."""
    cpu = label.cpu()  # per-image class lists and coin flips: cheap on the CPU, a sync each on a GPU
    dropped = torch.zeros_like(cpu, dtype=torch.bool)
    for b in range(cpu.shape[0]):
        present = [int(c) for c in torch.unique(cpu[b]) if c >= 0 and c != background_index]
        for c in present:
            if torch.rand(1, generator=generator).item() < share:
                dropped[b] |= cpu[b] == c
    return dropped.to(label.device)


def blind_editable(damaged: torch.Tensor, removed_px: torch.Tensor, background_index: int | None) -> torch.Tensor:
    """Blind repair: inside removed patches, background and unlabelled pixels are the ones that may change."""
    return removed_px & background_pixels(damaged, background_index)


def background_cells(label, background_index: int | None, grid: int = 14, ratio: float = 0.5):
    """The paper's protocol on a label of any size: the `ratio` most-background cells of a grid x grid
    partition, (H, W) numpy label (< 0 unlabelled) -> (H, W) bool. Unlabelled pixels count as background;
    ties keep row-major order."""
    H, W = label.shape
    ys = np.linspace(0, H, grid + 1).astype(int)
    xs = np.linspace(0, W, grid + 1).astype(int)
    bg = background_pixels(label, background_index)
    share = [(bg[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean(), i, j) for i in range(grid) for j in range(grid)]
    share.sort(key=lambda c: -c[0])  # stable
    cells = np.zeros((H, W), bool)
    for _, i, j in share[: int(round(grid * grid * ratio))]:
        cells[ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = True
    return cells
