"""What the bank's image encoder sees, from the image alone: a linear probe on its maps, frozen or not.

    python benchmarks/encoder_probe.py --data path/to/voc2012 [--bank checkpoints/voc] [--views 2]

A 1 x 1 convolution on the stride-16 map and the (upsampled) stride-32 map predicts each pixel's class;
it trains on the training split's views as `labelfix train` crops them (seed 0, the first --views of
its fixed crops) and is scored as mIoU on the whole val images, at the bank's label size. Rows:

- frozen: the encoder as the bank ships it, at the model's encoder size (224 px for the small preset);
- tuned: the stride-32 blocks and the head (2.7M of Lite0's 3.4M parameters) trained with the probe
  (AdamW, --tune-lr); a bank retrain on tuned weights is worth its hour when this beats frozen by 5;
- frozen at twice the size, its maps pooled to the patch grid: whether a larger input sees more.

The training loss is printed beside each row: a tuned row far below frozen in loss gives a bank features
far better on its training images than it gets at repair.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from encoder_finetune import TunedPart  # noqa: E402

from labelfix.bank.store import load_bank, resolve_bank_path  # noqa: E402
from labelfix.data import open_dataset, resize_pair  # noqa: E402
from labelfix.train.features import view_image  # noqa: E402
from labelfix.train.samples import TrainSamples  # noqa: E402


@dataclass(frozen=True)
class Row:
    name: str
    scale: int   # the encoder's input, in multiples of the model's encoder size
    tune: bool   # whether the stride-32 blocks and the head train with the probe
    tail: bool   # whether the probe reads the stride-16 map through the tail (else both maps, pooled)


ROWS = (Row("frozen", 1, False, True), Row("tuned", 1, True, True), Row("frozen, twice the size", 2, False, False))
PROBE_LR = 3e-3  # the linear probe's; the tail's is --tune-lr, lower, as it starts trained


@dataclass
class Views:
    maps: torch.Tensor    # (N, C, g, g) fp16: what the probe reads, at the patch grid
    labels: torch.Tensor  # (N, S, S) uint8 at the model's input size


class Tail(nn.Module):
    """The encoder after its stride-16 map (its stride-32 blocks and the head) and the linear probe."""

    def __init__(self, encoder: nn.Module, classes: int, tune: bool):
        super().__init__()
        self.part = TunedPart(encoder, max(encoder.taps) + 1).requires_grad_(tune)
        self.probe = nn.Conv2d(self.part.blocks[0].expand.in_channels + self.part.head.out_channels, classes, 1)

    def maps(self, f16: torch.Tensor) -> torch.Tensor:
        _, f32 = self.part(f16)
        f32 = F.interpolate(f32, size=f16.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([f16, f32], 1)

    def forward(self, maps: torch.Tensor, tail: bool) -> torch.Tensor:
        return self.probe(self.maps(maps) if tail else maps)


@torch.no_grad()
def views(samples: TrainSamples, count: int, encode: Callable[[torch.Tensor], torch.Tensor], size: int,
          label_size: int) -> Views:
    """The first `count` views of every sample: encode(image at `size`) and the label at `label_size`."""
    jobs = [(i, v) for i in range(len(samples)) for v in range(count)]
    maps, labels = [], []
    for start in range(0, len(jobs), 16):
        batch = jobs[start:start + 16]
        images = torch.stack([view_image(samples, i, v, size) for i, v in batch])
        maps.append(encode(images.contiguous(memory_format=torch.channels_last)).half().contiguous())
        for i, v in batch:
            label = resize_pair(*samples.cropped(i, samples.crop(i, v)), label_size)[1]
            labels.append(torch.from_numpy(label.astype(np.uint8)))
    return Views(torch.cat(maps), torch.stack(labels))


def miou(model: Tail, val: Views, tail: bool, classes: int) -> float:
    inter, union = torch.zeros(classes), torch.zeros(classes)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(val.maps), 64):
            logits = model(val.maps[start:start + 64].float(), tail)
            pred = F.interpolate(logits, size=val.labels.shape[-1], mode="bilinear", align_corners=False).argmax(1)
            y = val.labels[start:start + 64].long()
            for c in range(classes):
                p, t = (pred == c) & (y != 255), y == c
                inter[c] += (p & t).sum()
                union[c] += (p | t).sum()
    model.train()
    seen = union > 0
    return 100 * (inter[seen] / union[seen]).mean().item()


def fit(model: Tail, train: Views, tail: bool, epochs: int, tune_lr: float, batch: int = 32) -> float:
    """Train the probe (and, where it trains, the tail); the last epoch's mean loss."""
    groups = [{"params": list(model.probe.parameters()), "lr": PROBE_LR}]
    tuned = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in model.probe.parameters())]
    if tuned:
        groups.append({"params": tuned, "lr": tune_lr})
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    steps = len(train.maps) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in groups], total_steps=epochs * steps,
                                                pct_start=0.1)
    for _ in range(epochs):
        order, total = torch.randperm(len(train.maps)), 0.0
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            logits = F.interpolate(model(train.maps[idx].float(), tail), size=train.labels.shape[-1], mode="bilinear",
                                   align_corners=False)
            loss = F.cross_entropy(logits, train.labels[idx].long(), ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
    return total / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--bank", default=None)
    ap.add_argument("--views", type=int, default=2, help="training views an image (labelfix train has 8)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--tune-lr", type=float, default=1e-4)
    a = ap.parse_args()
    bank = load_bank(resolve_bank_path(a.bank))
    cfg = bank.config
    encoder = bank.encoder()
    ds = open_dataset(a.data)
    classes = ds.classes.num_classes
    train = TrainSamples(ds.pairs("train"), ds.classes, cfg.input_size, augment=True, seed=0, views=8)
    val = TrainSamples(ds.pairs("val"), ds.classes, cfg.input_size, augment=False)
    grid = cfg.grid

    def pooled(image):  # both maps of the whole encoder, at the patch grid
        _, f16, f32 = encoder(image)
        return torch.cat([F.adaptive_avg_pool2d(f16, grid),
                          F.interpolate(f32, size=grid, mode="bilinear", align_corners=False)], 1)

    cached: dict[tuple[int, bool], tuple[Views, Views]] = {}
    print(f"| encoder ({cfg.encoder}) | input px | probe mIoU (val) | training loss | seconds |")
    print("|---|---:|---:|---:|---:|")
    for row in ROWS:
        t, size = time.time(), row.scale * cfg.encoder_size
        if (size, row.tail) not in cached:  # the frozen and tuned rows read the same stride-16 maps
            encode = (lambda x: encoder(x)[1]) if row.tail else pooled  # the stride-16 map, or both pooled
            cached[size, row.tail] = tuple(views(s, n, encode, size, cfg.input_size)
                                           for s, n in ((train, a.views), (val, 1)))
        tr, va = cached[size, row.tail]
        torch.manual_seed(0)
        model = Tail(encoder, classes, row.tune)
        loss = fit(model, tr, row.tail, a.epochs, a.tune_lr)
        print(f"| {row.name} | {size} | {miou(model, va, row.tail, classes):.1f} | {loss:.3f} | "
              f"{time.time() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
