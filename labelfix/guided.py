"""Edge-aware finishing: a colour guided filter (He, Sun & Tang 2013) over the class probabilities.

The model decides classes at its coarse grid; inside a hole the boundary between two classes should
follow the image's edges, not the grid or the Voronoi line of nearest-label fill. The guided filter
makes each class map locally a linear function of the image colour, fitted to the known labels and
the model's probabilities around it, so a boundary snaps to the colour edge between the regions.
It is computed at a reduced size (the "fast guided filter", He & Sun 2015) and evaluated at full size
only at the pixels being decided. Measured on VOC val (benchmarks/repair_quality.py) it adds about
6 mIoU points on blocks erased to 255, where a dense CRF adds about 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RADIUS = 0.075      # window radius as a share of the image's longer side
EPS = 1e-4          # regularisation: smaller follows weaker edges
WORK_SIDE = 128     # the filter's coefficients are fitted at this longer side


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over (2r+1) x (2r+1) windows, clipped at the borders: (..., H, W) -> (..., H, W).

    Running sums make the cost independent of r.
    """
    H, W = x.shape[-2:]
    dev = x.device

    def along(t: torch.Tensor, n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = torch.cat([torch.zeros_like(t.narrow(dim, 0, 1)), t.cumsum(dim)], dim)
        lo = (torch.arange(n, device=dev) - r).clamp(0, n)
        hi = (torch.arange(n, device=dev) + r + 1).clamp(0, n)
        return c.index_select(dim, hi) - c.index_select(dim, lo), (hi - lo).float()

    y, ny = along(x, H, x.dim() - 2)
    y, nx = along(y, W, x.dim() - 1)
    return y / (ny.view(-1, 1) * nx.view(1, -1))


def fit(image: torch.Tensor, p: torch.Tensor, r: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided-filter coefficients, window-averaged: image (3, h, w) in [0, 1], p (C, h, w).

    Returns a (3, C, h, w) and b (C, h, w) such that the filtered p is sum_i a[i] * image[i] + b.
    """
    mean_i = box_mean(image, r)  # (3, h, w)
    mean_p = box_mean(p, r)  # (C, h, w)
    cov_ii = box_mean(image[:, None] * image[None], r) - mean_i[:, None] * mean_i[None]  # (3, 3, h, w)
    cov_ip = box_mean(image[:, None] * p[None], r) - mean_i[:, None] * mean_p[None]  # (3, C, h, w)
    sigma = cov_ii.permute(2, 3, 0, 1) + eps * torch.eye(3, device=image.device)  # (h, w, 3, 3)
    a = torch.linalg.solve(sigma, cov_ip.permute(2, 3, 0, 1)).permute(2, 3, 0, 1)  # (3, C, h, w)
    b = mean_p - (a * mean_i[:, None]).sum(0)  # (C, h, w)
    return box_mean(a, r), box_mean(b, r)


def guided_probabilities(image: torch.Tensor, p: torch.Tensor, where: torch.Tensor,
                         radius: float = RADIUS, eps: float = EPS, work_side: int = WORK_SIDE) -> torch.Tensor:
    """Filter class maps p (C, H, W) guided by image (3, H, W) in [0, 1]; evaluate at `where` (H, W) bool.

    Returns (C, N) for the N pixels of `where`, in `where`'s row-major order.
    """
    from .predict import upsample_at  # the same bilinear evaluation at chosen pixels

    H, W = where.shape
    scale = min(1.0, work_side / max(H, W))
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    small_i = F.interpolate(image[None], size=(h, w), mode="area")[0] if scale < 1 else image
    small_p = F.interpolate(p[None], size=(h, w), mode="area")[0] if scale < 1 else p
    r = max(1, round(radius * max(h, w)))
    a, b = fit(small_i, small_p, r, eps)
    C = p.shape[0]
    coef = upsample_at(torch.cat([a.reshape(3 * C, h, w), b]), (H, W), where)  # (4C, N)
    pixels = image[:, where]  # (3, N)
    return (coef[:3 * C].view(3, C, -1) * pixels[:, None]).sum(0) + coef[3 * C:]  # (C, N)
