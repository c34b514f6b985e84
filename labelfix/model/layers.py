"""Transformer building blocks (paper eq. 4-9): pre-norm blocks of multi-head self-attention and a ReLU MLP."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, D); key_mask: (B, N) bool, True = a real token others may attend to."""
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)  # (B, h, N, d)
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    """FFN(x) = ReLU(x W1 + b1) W2 + b2 (paper eq. 9)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class Block(nn.Module):
    """x = x + DropPath(MSA(LN(x))); x = x + DropPath(FFN(LN(x)))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), key_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class RefineHead(nn.Module):
    """Image-guided convolutional refinement (our addition, docs/model.md).

    The transformer predicts per patch; object boundaries inside a removed patch are
    pixel detail. This head looks at the image, the nearest-label prior, which pixels are editable,
    and the decoder's logits, with dilated context at half resolution (a reach of about 120 pixels),
    and adds a residual to the logits. Its last layer starts near zero, so it starts as a no-op.
    """

    def __init__(self, num_classes: int, dim: int, guide_channels: int = 2, feature_channels: int = 0):
        super().__init__()
        k = num_classes
        self.down = nn.Conv2d(3 + k + guide_channels + k, dim, 4, stride=2, padding=1)
        # the image encoder's stride-8 features, where the model has an encoder
        self.features = nn.Conv2d(feature_channels, dim, 1) if feature_channels else None
        self.context = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=d, dilation=d) for d in (1, 2, 4, 8, 16))
        self.out = nn.Conv2d(dim, k, 1)
        nn.init.normal_(self.out.weight, std=1e-4)  # near no-op at start, yet every layer gets a gradient
        nn.init.zeros_(self.out.bias)

    def forward(self, image, prior, guide, logits, features=None) -> torch.Tensor:
        """image (B,3,S,S), prior (B,K,S,S), guide (B,G,S,S): editable mask and distance to the nearest known
        pixel, logits (B,K,S,S), features (B,F,h,w) or None -> residual (B,K,S,S)."""
        # channels last (NHWC): oneDNN's bf16 convolutions run faster so, the dilated ones up to 4x; the
        # inputs are cast to the weights' type before they are joined, which halves the copying in bf16
        x = torch.cat([t.to(self.down.weight.dtype) for t in (image, prior, guide, logits)], 1)
        x = self.down(x.contiguous(memory_format=torch.channels_last))  # (B, C, S/2, S/2)
        if self.features is not None:
            f = self.features(features.to(self.features.weight.dtype))  # (B, C, h, w)
            x = x + F.interpolate(f, size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = F.relu(x)
        for conv in self.context:
            x = x + F.relu(conv(x))
        # upsampled in fp32: under bf16 autocast the bf16 kernel is slower, and the sum with the fp32
        # logits would convert it back anyway
        x = F.interpolate(self.out(x).float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
        return x.contiguous()  # back to (B, K, S, S) row-major, like the logits it is added to
