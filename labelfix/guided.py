"""Edge-aware finishing: a colour guided filter (He, Sun & Tang 2013) over the class probabilities.

The model decides classes at its coarse grid; inside a hole the boundary between two classes should
follow the image's edges, not the grid or the Voronoi line of nearest-label fill. The guided filter
makes each class map locally a linear function of the image colour, fitted to the known labels and
the model's probabilities around it, so a boundary snaps to the colour edge between the regions.
It is computed at a reduced size (the "fast guided filter", He & Sun 2015) and evaluated at full size
only at the pixels being decided. On the 289 VOC val labels it takes repair of blocks erased to 255
from 76.7 to 83.2 mIoU (benchmarks/repair_quality.py) and the paper's protocol at ratio 0.5 from 25.9
to 37.4 PA-mIoU (labelfix bench); a dense CRF over nearest-label fill scores 79.6 and 26.6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RADIUS = 0.075      # window radius as a share of the image's longer side
EPS = 1e-4          # regularisation: smaller follows weaker edges
WORK_SIDE = 128     # the filter's coefficients are fitted at this longer side


def pixel_grid(where: torch.Tensor) -> torch.Tensor:
    """The pixels of `where` (H, W) bool as a grid_sample grid (1, 1, N, 2) of (x, y) in [-1, 1].

    Sampling a (C, h, w) map at it with bilinear, align_corners=False and border padding equals
    upsampling the map to (H, W) with F.interpolate and reading those pixels (row-major order).
    """
    H, W = where.shape
    ys, xs = torch.nonzero(where, as_tuple=True)
    gx = (xs.float() + 0.5) * (2.0 / W) - 1.0
    gy = (ys.float() + 0.5) * (2.0 / H) - 1.0
    return torch.stack([gx, gy], -1).view(1, 1, -1, 2)


def sample_at(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear values of maps (C, h, w) at a `pixel_grid`: -> (C, N)."""
    return F.grid_sample(maps[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0]


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


class ImageGuide:
    """The image-dependent half of the filter, computed once per image and shared by its passes.

    image (3, H, W) in [0, 1]; where (H, W) bool: the pixels the filtered maps are evaluated at;
    grid: `pixel_grid(where)` when the caller has it already.
    """

    def __init__(self, image: torch.Tensor, where: torch.Tensor, radius: float = RADIUS, eps: float = EPS,
                 work_side: int = WORK_SIDE, grid: torch.Tensor | None = None):
        H, W = where.shape
        scale = min(1.0, work_side / max(H, W))
        self.full = (H, W)
        self.small = (max(1, round(H * scale)), max(1, round(W * scale)))
        self.r = max(1, round(radius * max(self.small)))
        small_i = self.shrink(image)  # (3, h, w)
        self.image = small_i
        self.mean_i = box_mean(small_i, self.r)  # (3, h, w)
        cov_ii = box_mean(small_i[:, None] * small_i[None], self.r) - self.mean_i[:, None] * self.mean_i[None]
        eye = eps * torch.eye(3, device=image.device)
        self.inv_sigma = torch.linalg.inv(cov_ii.permute(2, 3, 0, 1) + eye)  # (h, w, 3, 3)
        self.pixels = image[:, where]  # (3, N)
        self.grid = pixel_grid(where) if grid is None else grid  # (1, 1, N, 2)

    def shrink(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x[None], size=self.small, mode="area")[0] if self.small != self.full else x

    def filter(self, p: torch.Tensor) -> torch.Tensor:
        """Class maps p (C, H, W) -> filtered (C, N) at the guide's pixels."""
        small_p = self.shrink(p)  # (C, h, w)
        C, (h, w), r = p.shape[0], self.small, self.r
        mean_p = box_mean(small_p, r)  # (C, h, w)
        cov_ip = box_mean(self.image[:, None] * small_p[None], r) - self.mean_i[:, None] * mean_p[None]  # (3, C, h, w)
        a = (self.inv_sigma @ cov_ip.permute(2, 3, 0, 1)).permute(2, 3, 0, 1)  # (3, C, h, w)
        b = mean_p - (a * self.mean_i[:, None]).sum(0)  # (C, h, w)
        coef = torch.cat([box_mean(a, r).reshape(3 * C, h, w), box_mean(b, r)])  # (4C, h, w)
        coef = sample_at(coef, self.grid)  # (4C, N)
        return (coef[:3 * C].view(3, C, -1) * self.pixels[:, None]).sum(0) + coef[3 * C:]  # (C, N)


def guided_probabilities(image: torch.Tensor, p: torch.Tensor, where: torch.Tensor,
                         radius: float = RADIUS, eps: float = EPS, work_side: int = WORK_SIDE) -> torch.Tensor:
    """Filter class maps p (C, H, W) guided by image (3, H, W) in [0, 1]; evaluate at `where` (H, W) bool.

    Returns (C, N) for the N pixels of `where`, in `where`'s row-major order.
    """
    return ImageGuide(image, where, radius, eps, work_side).filter(p)
