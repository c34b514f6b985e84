"""Edge-aware finishing: a colour guided filter (He, Sun & Tang 2013) over the class probabilities.

The model decides classes at its coarse grid; inside a hole the boundary between two classes should
follow the image's edges, not the grid or the Voronoi line of nearest-label fill. The guided filter
makes each class map locally a linear function of the image colour, fitted to the known labels and
the model's probabilities around it, so a boundary snaps to the colour edge between the regions.
It is computed at a reduced size (the "fast guided filter", He & Sun 2015, with box downsampling) and
evaluated at full size only at the pixels being decided. On the 289 VOC val labels it takes repair of
blocks erased to 255 from 76.7 to 83.2 mIoU (benchmarks/repair_quality.py) and the paper's protocol
at ratio 0.5 from 25.9 to 37.4 PA-mIoU (labelfix bench); a dense CRF over nearest-label fill scores
79.6 and 26.6.
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
    return pixel_grid_at(torch.nonzero(where.flatten())[:, 0], where.shape)


def pixel_grid_at(index: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """`pixel_grid` of the pixels at flat (row-major) positions index (N,) of an (H, W) image."""
    H, W = shape
    ys, xs = index // W, index % W
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

    def window_sums(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
        # zeros before and after, so every window is a difference of two running sums r + r + 1 apart
        pad = [0, 0] * (t.dim() - 1 - dim) + [r + 1, r]
        c = F.pad(t, pad).cumsum(dim)
        return c.narrow(dim, 2 * r + 1, n) - c.narrow(dim, 0, n)

    def counts(n: int) -> torch.Tensor:
        i = torch.arange(n, device=x.device)
        return ((i + r + 1).clamp(max=n) - (i - r).clamp(min=0)).float()

    y = window_sums(window_sums(x, H, x.dim() - 2), W, x.dim() - 1)
    return y / (counts(H).view(-1, 1) * counts(W).view(1, -1))


class ImageGuide:
    """The image-dependent half of the filter, computed once per image and shared by its passes.

    image (3, H, W) in [0, 1]; where (H, W) bool: the pixels the filtered maps are evaluated at;
    index, grid: their flat positions (N,) and `pixel_grid(where)`, when the caller has them already.

    The filter's coefficients are fitted on a reduced grid of at most `work_side` cells a side; each
    full-size pixel belongs to one cell (box downsampling), so maps can also be shrunk from their
    values at a few pixels (`shrink_sparse`) without ever being built at full size.
    """

    def __init__(self, image: torch.Tensor, where: torch.Tensor, radius: float = RADIUS, eps: float = EPS,
                 work_side: int = WORK_SIDE, grid: torch.Tensor | None = None,
                 index: torch.Tensor | None = None):
        H, W = where.shape
        dev = image.device
        scale = min(1.0, work_side / max(H, W))
        self.full = (H, W)
        h, w = self.small = (max(1, round(H * scale)), max(1, round(W * scale)))
        self.r = max(1, round(radius * max(self.small)))
        rows = torch.arange(H, device=dev) * h // H
        cols = torch.arange(W, device=dev) * w // W
        self.cell = (rows[:, None] * w + cols[None]).flatten()  # (H*W,) the cell of every pixel
        self.area = (torch.bincount(rows, minlength=h)[:, None] * torch.bincount(cols, minlength=w)[None]
                     ).flatten().float()  # (h*w,) pixels per cell
        self.where = where.flatten()  # (H*W,)
        self.index = torch.nonzero(self.where)[:, 0] if index is None else index  # (N,) flat positions
        self.cell_at = self.cell.index_select(0, self.index)  # (N,) the cells of the evaluated pixels
        flat = image.reshape(3, H * W)
        small_i = self.shrink(flat.view(3, H, W))  # (3, h, w)
        self.image = small_i
        sq = (small_i[:, None] * small_i[None]).reshape(9, h, w)
        means = box_mean(torch.cat([small_i, sq]), self.r)  # (3 + 9, h, w): one pass for both
        self.mean_i = means[:3]
        cov_ii = means[3:].view(3, 3, h, w) - self.mean_i[:, None] * self.mean_i[None]
        self.inv_sigma = _inverse_3x3(cov_ii + eps * torch.eye(3, device=dev)[:, :, None, None])  # (3, 3, h, w)
        self.pixels = flat.index_select(1, self.index)  # (3, N)
        self.grid = pixel_grid_at(self.index, self.full) if grid is None else grid  # (1, 1, N, 2)

    def shrink(self, x: torch.Tensor) -> torch.Tensor:
        """(C, H, W) -> (C, h, w): the mean over each cell's pixels."""
        if self.small == self.full:
            return x
        C = x.shape[0]
        sums = torch.zeros(C, self.area.numel(), device=x.device).index_add_(1, self.cell, x.reshape(C, -1))
        return (sums / self.area).view(C, *self.small)

    def shrink_sparse(self, base_sums: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The shrunk map whose pixels outside `where` sum to base_sums (h*w, C) per cell and whose
        pixels in `where` hold values (N, C): -> (C, h, w)."""
        sums = base_sums.index_add(0, self.cell_at, values)  # (h*w, C)
        return (sums / self.area[:, None]).t().reshape(-1, *self.small)

    def filter(self, p: torch.Tensor) -> torch.Tensor:
        """Class maps p (C, H, W) -> filtered (C, N) at the guide's pixels."""
        return self.filter_small(self.shrink(p))

    def filter_small(self, small_p: torch.Tensor) -> torch.Tensor:
        """Class maps already shrunk, (C, h, w) -> filtered (C, N) at the guide's pixels."""
        C, (h, w), r = small_p.shape[0], self.small, self.r
        prod = (self.image[:, None] * small_p[None]).reshape(3 * C, h, w)
        means = box_mean(torch.cat([small_p, prod]), r)  # (C + 3C, h, w)
        mean_p = means[:C]
        cov_ip = means[C:].view(3, C, h, w) - self.mean_i[:, None] * mean_p[None]  # (3, C, h, w)
        a = (self.inv_sigma[:, :, None] * cov_ip[None]).sum(1)  # (3, C, h, w): Sigma^-1 cov per cell
        b = mean_p - (a * self.mean_i[:, None]).sum(0)  # (C, h, w)
        coef = box_mean(torch.cat([a.reshape(3 * C, h, w), b]), r)  # (4C, h, w)
        coef = sample_at(coef, self.grid)  # (4C, N)
        return (coef[:3 * C].view(3, C, -1) * self.pixels[:, None]).sum(0) + coef[3 * C:]  # (C, N)


def _inverse_3x3(m: torch.Tensor) -> torch.Tensor:
    """Inverse of a field of 3 x 3 matrices (3, 3, h, w), by cofactors (far cheaper than a batched LU)."""
    c00 = m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]
    c01 = m[1, 2] * m[2, 0] - m[1, 0] * m[2, 2]
    c02 = m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]
    c10 = m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2]
    c11 = m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0]
    c12 = m[0, 1] * m[2, 0] - m[0, 0] * m[2, 1]
    c20 = m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]
    c21 = m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]
    c22 = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    det = m[0, 0] * c00 + m[0, 1] * c01 + m[0, 2] * c02
    # inverse = adjugate / det, the adjugate being the transposed cofactor matrix
    adj = torch.stack([torch.stack([c00, c10, c20]), torch.stack([c01, c11, c21]), torch.stack([c02, c12, c22])])
    return adj / det


def guided_probabilities(image: torch.Tensor, p: torch.Tensor, where: torch.Tensor,
                         radius: float = RADIUS, eps: float = EPS, work_side: int = WORK_SIDE) -> torch.Tensor:
    """Filter class maps p (C, H, W) guided by image (3, H, W) in [0, 1]; evaluate at `where` (H, W) bool.

    Returns (C, N) for the N pixels of `where`, in `where`'s row-major order.
    """
    return ImageGuide(image, where, radius, eps, work_side).filter(p)
