"""How far objects reach into a hole: a background bias learned per pixel at the model grid.

The nearest-label prior carries every object at a hole's edge into the hole, up to the line halfway
to the nearest other label, and the guided filter keeps it there. Whether that is right depends on the
hole: the paper's removed cells are the most background-heavy of the label, and the objects next to
them reach only a little way in (VOC val, the bundled bank: objects predicted on twice the pixels they
hold); a block cut across an object has it run on. A constant bias towards the background trades one
for the other (train/calibrate.py: cells 37.6 -> 45.2 mIoU at 3, blocks 87.1 -> 80.5).

`ExtentBias` reads, at each unknown pixel of the model grid, how far it is from a known pixel, from
known background and from a known object, whether its nearest known label is background, how sure the
model is of background there, the size of the hole it lies in, and two numbers of the label: the share
of its known pixels that are background, and the share of the hole's known rim that is. From these a
small MLP gives the bias added to the background logit there. It is fitted after the model, on the
model's own output on training labels with holes of both kinds (random blocks and the paper's cells),
by cross-entropy against the true labels; calibration then picks, per repair mode, how much of it to
apply (0: none).

VOC val, bundled bank, 256 px (benchmarks/repair_quality.py, calibrated): paper cells 40.0 -> 48.9 mIoU,
random blocks 86.7 -> 86.5; `labelfix bench` (the paper's protocol, --policy replace) PA-mIoU 39.1 /
41.0 / 45.4 -> 41.0 / 46.5 / 49.1. Without the hole's size (a prototype on cached model outputs, 0.75 of
the bias, no constant): paper cells 48.0 against 49.7, blocks 86.5 against 86.8.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .propagate import nearest_fill
from .regions import components

FEATURES = 8
HIDDEN = 32
SAMPLES_PER_HOLE = 400  # unknown model pixels drawn per damaged training label
# the share of the model's correction the bias is fitted for (and its features read): the one calibration
# gives --missing on VOC. Fitted at 1 instead, the whole bias gave 43.4 on the paper's cells at 256 px
# against 49.6 (blocks 86.3 and 86.1; prototype without the hole's size, cached model outputs)
CORRECTION_SHARE = 0.75


def extent_features(label: torch.Tensor, nearest: torch.Tensor, distance: torch.Tensor, logits: torch.Tensor,
                    background: int) -> torch.Tensor:
    """(B, S, S, FEATURES) per model pixel.

    label (B, S, S) long, -1 unknown; nearest, distance (B, S, S): the nearest known label and the
    distance to it (propagate.nearest_fill); logits (B, K, S, S): the model's output, prior included.
    Distances are in shares of the grid's side; pixels with no known background (or object) anywhere
    get twice the side. The hole's size is its 4-connected piece's share of the grid (0 at known pixels).
    """
    B, S, _ = label.shape
    far = 2.0 * S
    is_object = (label >= 0) & (label != background)
    to_background, to_object = (_coarse_distance(m).clamp(max=far) for m in (label == background, is_object))
    # how sure of background: log p(background) - log p(likeliest other), the same in logits
    others = torch.cat([logits[:, :background], logits[:, background + 1:]], 1)
    margin = (logits[:, background].float() - others.amax(1).float()).clamp(-10, 10) / 5  # (B, S, S)
    known = label >= 0
    hole = ~known
    # the rim: known pixels next to the hole (8-neighbours)
    near_hole = F.max_pool2d(hole[:, None].float(), 3, 1, 1)[:, 0] > 0
    rim = near_hole & known
    is_bg = (label == background).float()
    known_bg = (is_bg * known).flatten(1).sum(1) / known.flatten(1).sum(1).clamp(min=1)  # (B,)
    rim_bg = (is_bg * rim).flatten(1).sum(1) / rim.flatten(1).sum(1).clamp(min=1)
    known_bg = torch.where(known.flatten(1).any(1), known_bg, torch.ones_like(known_bg))
    rim_bg = torch.where(rim.flatten(1).any(1), rim_bg, torch.ones_like(rim_bg))
    per_label = lambda v: v.view(B, 1, 1).expand(B, S, S)  # noqa: E731
    return torch.stack([distance.float() / S, to_background / S, to_object / S,
                        (nearest == background).float(), margin, per_label(known_bg), per_label(rim_bg),
                        hole_size(hole)], -1)


def _coarse_distance(mask: torch.Tensor) -> torch.Tensor:
    """(B, S, S) bool -> (B, S, S) float: the distance to the nearest set pixel, searched on every other
    pixel (a quarter of the cost; these features are smooth), in full-grid pixels."""
    B, S, _ = mask.shape
    sparse = mask[:, ::2, ::2]
    _, distance = nearest_fill(sparse.long() - 1, known=sparse, with_distance=True, mend=False)
    return (2 * distance).repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :S, :S]


def hole_size(hole: torch.Tensor) -> torch.Tensor:
    """(B, S, S) bool -> (B, S, S) float: the share of the grid held by each pixel's 4-connected hole."""
    out = torch.zeros(hole.shape)
    for b, mask in enumerate(hole.cpu().numpy()):
        ids, n = components(mask)
        if n:
            share = np.bincount(ids[ids >= 0], minlength=n) / mask.size
            out[b] = torch.from_numpy(np.where(ids >= 0, share[np.maximum(ids, 0)], 0.0))
    return out


def output_features(label: torch.Tensor, nearest: torch.Tensor, distance: torch.Tensor, logits: torch.Tensor,
                    prior_scale: float, background: int, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`extent_features` from the model's output without its prior (as inference.run.run_model has it), of
    which `share` is taken; returns (features (B, S, S, F), those logits with the prior added back
    (B, K, S, S))."""
    with_prior = (share * logits.float()).scatter_add_(1, nearest[:, None], torch.full(nearest[:, None].shape,
                                                                                     float(prior_scale)))
    return extent_features(label, nearest, distance, with_prior, background), with_prior


class ExtentBias(nn.Module):
    """(..., FEATURES) -> (...) the bias added to the background logit."""

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[..., 0]


def hole_samples(features: torch.Tensor, logits: torch.Tensor, truth: torch.Tensor, hole: torch.Tensor,
                 rng: np.random.Generator, per_label: int = SAMPLES_PER_HOLE):
    """Draw training pixels from one damaged label: (features (n, F), logits (n, K), classes (n,)).

    features (S, S, F), logits (K, S, S), truth (S, S) long (-1 void), hole (S, S) bool."""
    where = torch.nonzero((hole & (truth >= 0)).flatten())[:, 0]
    if len(where) > per_label:
        where = where[torch.from_numpy(rng.choice(len(where), per_label, replace=False))]
    return (features.reshape(-1, features.shape[-1])[where], logits.flatten(1)[:, where].t(),
            truth.flatten()[where])


def train_extent(x: torch.Tensor, logits: torch.Tensor, truth: torch.Tensor, background: int, seed: int = 0,
                 epochs: int = 30) -> ExtentBias:
    """Fit the bias so that softmax(logits + bias at the background) matches the true classes.

    x (N, F), logits (N, K), truth (N,) long."""
    with torch.random.fork_rng():  # seeded here for reproducible banks, without touching the caller's RNG
        torch.manual_seed(seed)
        model = ExtentBias()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        at_background = F.one_hot(torch.tensor(background), logits.shape[1]).float()  # (K,)
        for _ in range(epochs):
            order = torch.randperm(len(truth))
            for i in range(0, len(order), 4096):
                b = order[i:i + 4096]
                z = logits[b] + model(x[b])[:, None] * at_background
                loss = F.cross_entropy(z, truth[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.eval()
