"""Stack fuse, patchify, and the fixed 2-D sin-cos positions (paper eq. 1-3)."""

from __future__ import annotations

import numpy as np
import torch


def one_hot(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) long, -1 = no label -> (B, K, H, W) float; unlabelled pixels are all-zero."""
    B, H, W = label.shape
    out = torch.zeros(B, num_classes, H, W, device=label.device)
    # scatter writes 1 at known pixels and 0 (a no-op) at unknown ones
    return out.scatter_(1, label.clamp(min=0).unsqueeze(1), (label >= 0).unsqueeze(1).float())


def stack_fuse(label: torch.Tensor, image: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Concat(l_1..l_K, image): (B, H, W) + (B, 3, H, W) -> (B, K+3, H, W)."""
    return torch.cat([one_hot(label, num_classes), image], dim=1)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C), patches in row-major order, pixels inside a patch row-major."""
    B, C, H, W = x.shape
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p)
    x = torch.einsum("bchpwq->bhwpqc", x)  # (B, h, w, p, p, C)
    return x.reshape(B, h * w, p * p * C)


def unpatchify(x: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """(B, L, p*p*C) -> (B, C, H, W); the inverse of patchify for a square grid."""
    B, L, _ = x.shape
    h = w = int(round(L ** 0.5))
    x = x.reshape(B, h, w, p, p, channels)
    x = torch.einsum("bhwpqc->bchpwq", x)  # (B, C, h, p, w, q)
    return x.reshape(B, channels, h * p, w * p)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions (MAE's): (grid*grid, dim); half the width encodes rows, half columns."""
    if dim % 4:
        raise ValueError("position embedding width must be a multiple of 4")

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)  # (M, d/2)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gy, gx = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    emb = np.concatenate([one_axis(dim // 2, gy), one_axis(dim // 2, gx)], axis=1)
    return torch.from_numpy(emb).float()
