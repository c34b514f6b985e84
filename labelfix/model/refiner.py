"""A second look at the line between background and objects inside holes, pixel by pixel.

The model decides at its grid (one cell is 2 to 4 pixels of a VOC label) and the guided filter moves
the boundaries it draws towards the image's edges, but not all the way: on VOC val labels with blocks
made missing, most of the wrong pixels lie within 2 px of a true boundary, and objects come out too thin.

`BoundaryRefiner` decides again, background or object, at the hole's pixels near a decided boundary (the
band: within BAND_RADIUS of a pixel decided background and of one decided object). It reads 8 channels
at 33 points of a 13 x 13 window around the pixel (`OFFSETS`): the image's colour, whether the point is
being decided, is known background or a known object, the model's probability of background there and
the decision so far. A small MLP gives a correction to the logit of the decision and of the model's
probability, so a refiner that learned nothing keeps the decision. Labels larger than `SIDE` read a
window and band scaled to their size. It is fitted after calibration, on the bank's own repairs of
training labels with blocks and the paper's cells made missing, by cross-entropy against the true labels
(train/finish.py: fit_refiner), and applied in the repair modes where it scored at least policy.REFINER_MIN_GAIN
better on validation labels. A second refiner of the same shape, fitted on the band of the boundaries the
first leaves (the bank's `refiner_second`), decides them once more where it gains enough for its cost
(policy.REFINER_SECOND_MIN_GAIN): the first moves a fifth of its band and still leaves objects too thin
(bundled bank, --policy replace: labelfix bench PA-mIoU held out 51.0 / 50.7 / 50.1 -> 55.4 / 52.0 / 50.5).

VOC val, bundled bank (benchmarks/repair_quality.py, --missing 255): blocks 86.5 -> 87.6 mIoU, paper
cells 48.9 -> 50.8 at 256 px, 85.3 -> 86.3 and 48.2 -> 50.5 at 500 px; labelfix bench (--policy
replace) PA-mIoU 41.0 / 46.5 / 49.1 -> 45.6 / 51.3 / 50.6. The band holds about 2,200 pixels of a 256 px
label and 9,400 of a 500 px one. On one thread a 500 px label costs about 8 ms (the band 0.6, the
features 2.7, the MLP 4.1-4.8, or 2.1-2.5 with `--precision bf16` on a CPU with AMX; 13 ms before
those were made faster), about what the guided filter's second pass, which the refiner replaces
(inference/finish.py), costs (5 to 8).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# the window: a 5 x 5 grid at stride 3 and the 3 x 3 around the centre, (dy, dx) in pixels at SIDE
OFFSETS = sorted({(dy, dx) for dy in (-6, -3, 0, 3, 6) for dx in (-6, -3, 0, 3, 6)}
                 | {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)})
CENTRE = OFFSETS.index((0, 0))
# rgb (normalised), deciding, known background, known object, p(background), decided background
CHANNELS = 8
BAND_RADIUS = 2   # pixels at SIDE: 3 scored the same (blocks 87.7, cells 50.8) on 50% more pixels
SIDE = 256        # the label size the window is measured for; larger labels scale it by round(side / SIDE)
HIDDEN = 32
SAMPLES_PER_LABEL = 600  # band pixels drawn per damaged training label
ROW_BLOCK = 2048  # the bf16 refiner's rows come in multiples of this


def scale_for(shape: tuple[int, int]) -> int:
    """How much the window and band grow for a label of this size (1 up to SIDE * 1.5)."""
    return max(1, round(max(shape) / SIDE))


def band(decided: np.ndarray, deciding: np.ndarray, background: int, radius: int) -> np.ndarray:
    """(H, W) bool: the pixels being decided within `radius` (a square) of a pixel decided background
    and of one decided an object. decided (H, W) classes; deciding (H, W) bool."""
    is_bg = decided == background
    is_object = deciding & ~is_bg
    is_bg &= deciding
    if not is_bg.any() or not is_object.any():
        return np.zeros(decided.shape, bool)
    # everything happens inside the box of the pixels being decided
    rows, cols = np.flatnonzero(deciding.any(1)), np.flatnonzero(deciding.any(0))
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    out = np.zeros(decided.shape, bool)
    out[box] = _dilate(is_bg[box], radius) & _dilate(is_object[box], radius) & deciding[box]
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool, grown by `radius` into a square: shifted ORs along rows, then along columns (the
    band of a 500 px label in 0.6 ms, against 5 ms from integral images' box sums)."""
    rows = mask.copy()
    for d in range(1, radius + 1):
        rows[d:] |= mask[:-d]
        rows[:-d] |= mask[d:]
    out = rows.copy()
    for d in range(1, radius + 1):
        out[:, d:] |= rows[:, :-d]
        out[:, :-d] |= rows[:, d:]
    return out


def pixel_features(image: np.ndarray, label: np.ndarray, deciding: np.ndarray, p_background: np.ndarray,
                   decided: np.ndarray, background: int, ys: np.ndarray, xs: np.ndarray, scale: int = 1
                   ) -> torch.Tensor:
    """(n, len(OFFSETS) * CHANNELS) uint8: what the refiner reads around each pixel (ys, xs) (n,), as
    bytes (the refiner brings them to their ranges).

    image (H, W, 3) uint8; label (H, W) model indices, -1 unknown (read only where not deciding);
    deciding (H, W) bool; p_background (H, W) float, the model's probability of background (read only
    where deciding; kept to 1/255); decided (H, W) classes so far. Points outside the label read black
    and neither known nor deciding, like void: 128 for both probabilities.
    """
    margin = max(max(abs(dy), abs(dx)) for dy, dx in OFFSETS) * scale
    # only the box the windows reach is read: the band's box and a margin, within the label
    y0, x0 = max(int(ys.min()) - margin, 0), max(int(xs.min()) - margin, 0)
    box = np.s_[y0:int(ys.max()) + margin + 1, x0:int(xs.max()) + margin + 1]
    image, label, deciding, p_background, decided = (a[box] for a in (image, label, deciding, p_background, decided))
    ys, xs = ys - y0, xs - x0
    H, W = label.shape
    # what is known, as the 0-255 value of both probability channels: 255 background, 0 object, 128 neither
    # (unlabelled); a lookup by label is 15 times faster than comparing labels
    value_of = np.zeros(max(int(label.max()), background) + 2, np.uint8)  # label + 1 -> value
    value_of[0], value_of[background + 1] = 128, 255
    known_value = value_of[label + 1]
    known_bg = ~deciding & (known_value == 255)
    known_object = ~deciding & (known_value == 0)
    table = torch.zeros((H + 2 * margin, W + 2 * margin, CHANNELS), dtype=torch.uint8)
    table[..., 6:] = 128
    planes = (deciding, known_bg, known_object,
              np.where(deciding, np.rint(p_background * 255).astype(np.uint8), known_value),
              np.where(deciding, (decided == background).astype(np.uint8) * 255, known_value))
    # torch interleaves the channels faster than numpy's strided writes, one channel at a time (0.9 against
    # 1.4 ms on a 500 px label)
    table[margin:margin + H, margin:margin + W] = torch.cat(
        [_as_tensor(image)] + [_as_tensor(p.view(np.uint8))[..., None] for p in planes], -1)
    # a pixel's 8 bytes are one 64-bit word: one gather per point of the window
    width = W + 2 * margin
    words = table.view(-1, CHANNELS).view(torch.int64)[:, 0]  # (padded pixels,)
    steps = torch.tensor([dy * scale * width + dx * scale for dy, dx in OFFSETS])  # (O,)
    at = torch.from_numpy((ys + margin) * width + xs + margin)  # (n,)
    picked = words.index_select(0, (at[:, None] + steps).flatten())  # (n * O,)
    return picked.view(torch.uint8).view(len(ys), len(OFFSETS) * CHANNELS)


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """The array as a tensor, without a copy unless it runs backwards along an axis (which torch cannot view)."""
    return torch.from_numpy(a if min(a.strides, default=0) >= 0 else a.copy())


# how each channel's byte is brought to its range: rgb normalised, flags as they are, probabilities / 255
_SCALE = torch.tensor([1 / (255 * 0.25)] * 3 + [1.0] * 3 + [1 / 255] * 2).repeat(len(OFFSETS))
_SHIFT = torch.tensor([-0.45 / 0.25] * 3 + [0.0] * 5).repeat(len(OFFSETS))


class BoundaryRefiner(nn.Module):
    """(n, len(OFFSETS) * CHANNELS) bytes (pixel_features) -> (n,) the logit that each pixel is background.

    With `bf16` (set by `in_bf16`; repair sets it only with `--precision bf16`), the first layer, nine
    tenths of the arithmetic, multiplies in bf16: bytes are exact there, only the weights round. On a CPU
    with AVX512-BF16 or AMX that layer takes a third of the time, the MLP half (4.1-4.8 -> 2.1-2.5 ms on a
    500 px label's band); 0.07% of the band's pixels are decided the other way."""

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(len(OFFSETS) * CHANNELS, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 1))
        # the decision and the model's probability carry through: the MLP learns only a correction
        self.decision_weight = nn.Parameter(torch.tensor(2.0))
        self.probability_weight = nn.Parameter(torch.tensor(1.0))
        self.bf16 = False

    def in_bf16(self) -> BoundaryRefiner:
        """A copy whose first layer multiplies in bf16 (for inference)."""
        twin = copy.deepcopy(self)
        twin.bf16 = True
        return twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, F) uint8, or float holding bytes -> (n,)"""
        first, rest = self.net[0], self.net[1:]
        # the bytes' scaling folded into the first layer: one pass over the inputs less
        weight, bias = first.weight * _SCALE, first.bias + first.weight @ _SHIFT
        if self.bf16:
            # rows padded to a multiple of ROW_BLOCK: oneDNN builds a kernel for every new shape, and one
            # per label had it rebuild the model's too (the model 1.7 ms an image slower)
            n = len(x)
            padded = torch.zeros(-(-n // ROW_BLOCK) * ROW_BLOCK, x.shape[1], dtype=torch.bfloat16)
            padded[:n] = x
            h = F.linear(padded, weight.to(torch.bfloat16))[:n].float() + bias
        else:
            h = F.linear(x.float(), weight, bias)
        centre = x[:, CENTRE * CHANNELS + 6:CENTRE * CHANNELS + 8].float()
        soft = (centre[:, 0] / 255).clamp(0.02, 0.98)
        hard = centre[:, 1] / 255
        return (rest(h)[:, 0] + self.decision_weight * (2 * hard - 1)
                + self.probability_weight * torch.log(soft / (1 - soft)))


def train_refiner(x: torch.Tensor, is_background: torch.Tensor, seed: int = 0, epochs: int = 12,
                  batch_size: int = 2048) -> BoundaryRefiner:
    """Fit on band pixels: x (n, F) features, is_background (n,) float, the truth."""
    with torch.random.fork_rng():  # seeded here for reproducible banks, without touching the caller's RNG
        torch.manual_seed(seed)
        model = BoundaryRefiner()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for i in range(0, len(order), batch_size):
                b = order[i:i + batch_size]
                loss = F.binary_cross_entropy_with_logits(model(x[b]), is_background[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.eval()
