"""Objects relabelled to background (blind repair): find them by the outline they left, and name them.

Labels in the VOC style outline every object with the ignore value. Relabel an object to background
and its outline stays behind: a ring of ignore pixels with background on both sides
(erasure.orphaned_outline). Inside the ring lies a connected piece of background that was the object.
`dropped_pieces` finds the pieces of background that such rings bound, and `RegionNamer`, a small
ensemble of MLPs, says for each which class it was, or that it is background after all (the ring's
outer side is a piece of background too). What it reads (`piece_features`): the piece's colours and
those around it, its edges' directions, its size, shape and place, how its border divides into
orphaned outline, outline of a surviving object and the image's edge, and which classes the label
still holds (a dropped horse is likelier where a person survives).

Recognising an object is what the L-MAE trained on ~1k images does not do (dropped objects: 0.7
mIoU); naming a region whose extent the outline gives is easier: the namer, trained on the VOC train
labels' objects, scores 32.0 on VOC val (benchmarks/repair_quality.py, dropped-objects).

Pure numpy but for the MLPs; about 23 ms a 500 x 375 label with dropped objects, and nothing runs
on a label without an orphaned outline.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .erasure import MAX_OUTLINE_WIDTH, row_runs

MIN_CROSSINGS = 3       # orphaned-outline crossings a piece must touch to be a candidate
MIN_AREA = 0.0005       # smallest candidate, as a share of the label
# a piece is given the class the namer finds likeliest if that reaches this probability. VOC val, dropped
# objects, the namer alone (fitted on 2 draws, no hole rule): 0 / 0.3 / 0.4 / 0.5 give 31.0 / 31.7 / 30.5 /
# 27.7 mIoU, changing 0.92 / 0.90 / 0.79 / 0.65% of the undamaged pixels
MIN_PROBABILITY = 0.4
# a named piece whose orphaned outline leads this much to one larger named piece is a hole in that object
# (VOC val, as above: 0.6 / 0.8 / 0.95 all give 30.3 mIoU and 0.53-0.58% changed, against 30.5 and 0.79%)
HOLE_SHARE = 0.8
# damaged versions of each training label (VOC val as above, with the hole rule: 2 / 4 / 8 draws give
# 30.3 / 32.3 / 32.3 mIoU, changing 0.57 / 0.33 / 0.68% of the undamaged pixels)
DRAWS = 4
WORK_SIDE = 256         # colours and edges are read on a grid at most this long a side (scale-free features)
COLOUR_LEVELS = 4       # per channel: 64 joint colour bins
EDGE_BINS = 8
SHAPE_FEATURES = 12
TOPOLOGY_FEATURES = 8


def num_features(num_classes: int) -> int:
    return 2 * COLOUR_LEVELS ** 3 + EDGE_BINS + SHAPE_FEATURES + TOPOLOGY_FEATURES + num_classes


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a (H, W) bool mask: (H, W) int32 component ids (-1 outside), and their count.

    Runs along rows are the nodes; runs that overlap in consecutive rows are joined by propagating the
    smallest run id along the joins, with pointer jumping, until nothing changes."""
    H, W = mask.shape
    rows, starts, ends = row_runs(mask, 1)
    R = len(rows)
    if R == 0:
        return np.full((H, W), -1, np.int32), 0
    # run j of row r + 1 touches run i of row r when start_j < end_i and end_j > start_i; runs are sorted
    # row-major and disjoint within a row, so the touching runs of each i are one range [lo, hi)
    key_start, key_end = rows * (W + 1) + starts, rows * (W + 1) + ends
    lo = np.searchsorted(key_end, (rows + 1) * (W + 1) + starts, side="right")
    hi = np.searchsorted(key_start, (rows + 1) * (W + 1) + ends, side="left")
    n = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(R), n)
    b = np.repeat(lo, n) + _offsets(n)
    root = np.arange(R)
    while True:
        joined = np.minimum(root[a], root[b])
        new = root.copy()
        np.minimum.at(new, a, joined)
        np.minimum.at(new, b, joined)
        new = new[new[new]]
        if np.array_equal(new, root):
            break
        root = new
    _, comp = np.unique(root, return_inverse=True)
    # paint the runs: +id at each run's first pixel, -id one past its last, summed along the flat label
    # (a run may end where the next row's begins, hence two arrays)
    first, past = np.zeros(H * W + 1, np.int32), np.zeros(H * W + 1, np.int32)
    first[rows * W + starts] = comp + 1
    past[rows * W + ends] = comp + 1
    out = (np.cumsum(first - past, dtype=np.int32)[:-1] - 1).reshape(H, W)
    return out, int(comp.max()) + 1


def _offsets(n: np.ndarray) -> np.ndarray:
    """0, 1, .., n[0]-1, 0, 1, .., n[1]-1, ...: each element's place within its group."""
    return np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)


def _crossings(label: np.ndarray, pieces: np.ndarray, width: int):
    """Outline runs along rows at most `width` long: the labels and pieces at their two ends, each (N,)."""
    W = label.shape[1]
    rows, starts, ends = row_runs(label < 0, 1)
    keep = (ends - starts <= width) & (starts > 0) & (ends < W)
    rows, starts, ends = rows[keep], starts[keep], ends[keep]
    return label[rows, starts - 1], label[rows, ends], pieces[rows, starts - 1], pieces[rows, ends]


def dropped_pieces(label: np.ndarray, background_index: int, exclude: np.ndarray | None = None):
    """Pieces of background bounded by orphaned outline: the candidates for dropped objects.

    label (H, W) model indices, -1 unlabelled; exclude (H, W) bool: pieces that reach it are no
    candidates (erased blocks, which repair fills otherwise). Returns (pieces (H, W) int32 piece ids,
    -1 elsewhere; candidate ids (M,); topology features (M, TOPOLOGY_FEATURES); links (2, L): the
    pieces at the two ends of each orphaned-outline crossing)."""
    H, W = label.shape
    pieces, n = components(label == background_index)
    if n == 0:
        return pieces, np.zeros(0, int), np.zeros((0, TOPOLOGY_FEATURES), np.float32), np.zeros((2, 0), int)
    width = max(4, round(MAX_OUTLINE_WIDTH * max(H, W)))
    ends = [np.concatenate(x) for x in zip(_crossings(label, pieces, width), _crossings(label.T, pieces.T, width))]
    left, right, left_piece, right_piece = ends
    bg = background_index
    orphaned = (left == bg) & (right == bg) & (left_piece != right_piece)
    to_object = ((left == bg) & (right >= 0) & (right != bg)) | ((right == bg) & (left >= 0) & (left != bg))
    area = np.bincount(pieces[pieces >= 0], minlength=n)
    orphaned_n = np.bincount(left_piece[orphaned], minlength=n) + np.bincount(right_piece[orphaned], minlength=n)
    eligible = (orphaned_n >= MIN_CROSSINGS) & (area >= MIN_AREA * H * W)
    if exclude is not None:
        eligible[pieces[exclude & (pieces >= 0)]] = False
    keep = np.flatnonzero(eligible)
    links = np.stack([left_piece[orphaned], right_piece[orphaned]])
    if len(keep) == 0:
        return pieces, keep, np.zeros((0, TOPOLOGY_FEATURES), np.float32), links
    object_n = np.bincount(np.where(left == bg, left_piece, right_piece)[to_object], minlength=n)
    border = np.zeros(n)
    for edge in (pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]):
        border += np.bincount(edge[edge >= 0], minlength=n)
    size = np.sqrt(area)  # a length, like the crossing and border counts: their ratios do not depend on scale
    rank = np.argsort(np.argsort(-area))
    topology = np.stack([
        area / (H * W), np.log(area / (H * W)) / 10, border / (4 * size + 1), orphaned_n / (size + 1),
        object_n / (size + 1), orphaned_n / (orphaned_n + object_n + border / 2 + 1), np.minimum(rank, 5) / 5,
        np.full(n, area.max() / (H * W))], 1)
    return pieces, keep, topology[keep].astype(np.float32), links


def _colour_histogram(pixels: np.ndarray) -> np.ndarray:
    q = pixels.astype(np.int64) * COLOUR_LEVELS // 256
    bins = (q[:, 0] * COLOUR_LEVELS + q[:, 1]) * COLOUR_LEVELS + q[:, 2]
    return np.bincount(bins, minlength=COLOUR_LEVELS ** 3) / max(len(pixels), 1)


def image_edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) float gradient magnitude of the grey image and (h, w) int direction bin (0..EDGE_BINS-1)."""
    gy, gx = np.gradient(image.astype(np.float32).mean(2))
    direction = ((np.arctan2(gy, gx) % np.pi) / np.pi * EDGE_BINS).astype(int).clip(0, EDGE_BINS - 1)
    return np.hypot(gx, gy), direction


def piece_features(image: np.ndarray, edges: tuple[np.ndarray, np.ndarray], region: np.ndarray,
                   present: np.ndarray, topology: np.ndarray) -> np.ndarray:
    """(F,) float32 features of one candidate piece.

    image (h, w, 3) uint8, its `image_edges` and region (h, w) bool on the working grid (`working_grid`);
    present (K,) the classes the label still holds (0/1); topology (TOPOLOGY_FEATURES,) from
    `dropped_pieces`."""
    h, w = region.shape
    pixels = image[region]
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    reach = max(2, int(0.05 * max(h, w)))  # the surroundings: the piece's box grown by 5% of the side
    around = np.zeros_like(region)
    around[max(0, y0 - reach):y1 + reach, max(0, x0 - reach):x1 + reach] = True
    around &= ~region
    magnitude, direction = edges[0][region], edges[1][region]
    edge_directions = np.bincount(direction, weights=magnitude, minlength=EDGE_BINS) / (magnitude.sum() + 1e-6)
    mean = pixels.mean(0) / 255
    shape = [region.mean(), (y1 - y0) / h, (x1 - x0) / w, np.log((y1 - y0) / (x1 - x0)), ys.mean() / h,
             xs.mean() / w, region.sum() / ((y1 - y0) * (x1 - x0)), magnitude.mean() / 50, *mean,
             pixels.std(0).mean() / 128]
    return np.concatenate([_colour_histogram(pixels), _colour_histogram(image[around]), edge_directions, shape,
                           topology, present]).astype(np.float32)


def working_grid(shape: tuple[int, int]) -> int:
    """The step that brings a label's longer side to at most WORK_SIDE."""
    return max(1, -(-max(shape) // WORK_SIDE))


def candidates(image: np.ndarray, label: np.ndarray, background_index: int, num_classes: int,
               exclude: np.ndarray | None = None):
    """The candidate pieces of one label and their features: (pieces (H, W), ids (M,), features (M, F),
    links (2, L) as in `dropped_pieces`)."""
    pieces, ids, topology, links = dropped_pieces(label, background_index, exclude)
    if len(ids) == 0:
        return pieces, ids, np.zeros((0, num_features(num_classes)), np.float32), links
    present = np.zeros(num_classes, np.float32)
    held = np.unique(label[label >= 0])
    present[held[held != background_index]] = 1
    step = working_grid(label.shape)
    small_image, small_pieces = image[::step, ::step], pieces[::step, ::step]
    small_edges, full_edges = image_edges(small_image), None  # once per label, not per piece
    rows = []
    for i, t in zip(ids, topology):
        region = small_pieces == i
        if region.any():
            rows.append(piece_features(small_image, small_edges, region, present, t))
        else:  # thinner than the grid: read it at full size
            full_edges = image_edges(image) if full_edges is None else full_edges
            rows.append(piece_features(image, full_edges, pieces == i, present, t))
    return pieces, ids, np.stack(rows), links


class RegionNamer(nn.Module):
    """An ensemble of MLPs over piece features: (M, F) -> (M, K) class probabilities (their mean)."""

    def __init__(self, num_classes: int, hidden: int = 256, members: int = 5):
        super().__init__()
        F = num_features(num_classes)
        self.register_buffer("mean", torch.zeros(F))
        self.register_buffer("scale", torch.ones(F))
        self.members = nn.ModuleList(
            nn.Sequential(nn.Linear(F, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, num_classes))
            for _ in range(members))

    def logits(self, x: torch.Tensor, member: int) -> torch.Tensor:
        return self.members[member]((x - self.mean) / self.scale)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.logits(x, m).softmax(-1) for m in range(len(self.members))]).mean(0)


def restore_dropped(image: np.ndarray, label: np.ndarray, background_index: int, namer: RegionNamer,
                    min_probability: float, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dropped objects given back their class.

    image (H, W, 3) uint8, label (H, W) model indices (-1 unlabelled), exclude as in `dropped_pieces`.
    Returns (classes (H, W) int64, -1 where nothing is restored; probability (H, W) float32 of the
    restored class, 0 elsewhere)."""
    restored = np.full(label.shape, -1, np.int64)
    probability = np.zeros(label.shape, np.float32)
    K = namer.members[0][-1].out_features
    pieces, ids, features, links = candidates(image, label, background_index, K, exclude)
    if len(ids) == 0:
        return restored, probability
    probs = namer(torch.from_numpy(features)).numpy()  # (M, K)
    best = probs.argmax(1)
    named = (best != background_index) & (probs[np.arange(len(ids)), best] >= min_probability)
    area = np.bincount(pieces[pieces >= 0]).astype(np.float64)  # (pieces,)
    named &= ~_holes_of_named(area, ids, named, links)
    if named.sum() > 1:
        best = _joint_names(area, ids, named, links, probs, best, background_index)
    if named.any():
        lookup = np.full(int(pieces.max()) + 2, -1, np.int64)  # piece id + 1 -> class; -1 for outside pieces
        lookup[ids[named] + 1] = best[named]
        restored = lookup[pieces + 1]
        chance = np.zeros(len(lookup), np.float32)
        chance[ids[named] + 1] = probs[np.arange(len(ids)), best][named]
        probability = chance[pieces + 1]
    return restored, probability


def _joint_names(area: np.ndarray, ids: np.ndarray, named: np.ndarray, links: np.ndarray, probs: np.ndarray,
                 best: np.ndarray, background_index: int) -> np.ndarray:
    """(M,) classes: named pieces that meet across orphaned outline are one object (or touching objects,
    usually of one class: a crowd) cut apart by its inner outline; each such group takes the object
    class with the largest area-weighted probability. Small pieces alone are named worst (a potted
    plant's leaves came out cow, horse and sheep). VOC val, dropped objects, namer alone: 32.3 ->
    33.1 mIoU, labels given more than one new class 70 -> 40. area (pieces,): each piece's pixels."""
    n = len(area)
    where = np.flatnonzero(named)  # candidate rows of the named pieces
    slot = np.full(n, -1)
    slot[ids[where]] = np.arange(len(where))
    a, b = slot[links[0]], slot[links[1]]
    a, b = a[(a >= 0) & (b >= 0)], b[(a >= 0) & (b >= 0)]
    group = np.arange(len(where))  # smallest member id, propagated along the links
    while True:
        new = group.copy()
        np.minimum.at(new, a, group[b])
        np.minimum.at(new, b, group[a])
        if np.array_equal(new, group):
            break
        group = new
    weighted = probs[where] * area[ids[where]][:, None]  # (G, K)
    best = best.copy()
    for g in np.unique(group):
        members = group == g
        if members.sum() > 1:
            score = weighted[members].sum(0)
            score[background_index] = -np.inf  # the group is named: an object
            best[where[members]] = int(score.argmax())
    return best


def _holes_of_named(area: np.ndarray, ids: np.ndarray, named: np.ndarray, links: np.ndarray) -> np.ndarray:
    """(M,) bool: named pieces whose orphaned outline leads mostly (HOLE_SHARE) to one larger named piece.

    A dropped bicycle's wheels and frame enclose background, and each such hole is a piece behind an
    orphaned outline too; the ring around it leads to the bicycle's piece, not to the background.
    area (pieces,): each piece's pixels."""
    n = len(area)
    is_named = np.zeros(n, bool)
    is_named[ids[named]] = True
    a, b = np.concatenate([links[0], links[1]]), np.concatenate([links[1], links[0]])  # both directions
    out = np.zeros(len(ids), bool)
    for k in np.flatnonzero(named):
        towards = b[a == ids[k]]
        if len(towards) == 0:
            continue
        counts = np.bincount(towards, minlength=n)
        main = int(counts.argmax())
        out[k] = is_named[main] and area[main] > area[ids[k]] and counts[main] >= HOLE_SHARE * len(towards)
    return out


def training_samples(pairs, classes, rng: np.random.Generator, draws: int = DRAWS):
    """Candidate pieces of the training labels with objects dropped: features (N, F), their true class
    (the majority of the known original pixels) (N,), and their share of the label (N,)."""
    from .damage import drop_some_classes
    from .data import load_pair

    K, bg = classes.num_classes, classes.background_index
    X, Y, A = [], [], []
    for img_path, lab_path in pairs:
        image, label = load_pair(img_path, lab_path, classes)
        for _ in range(draws):
            damaged = np.where(drop_some_classes(label, bg, rng), bg, label)
            pieces, ids, features, _ = candidates(image, damaged, bg, K)
            for i, f in zip(ids, features):
                truth = label[pieces == i]
                truth = truth[truth >= 0]
                if len(truth):
                    X.append(f)
                    Y.append(np.bincount(truth, minlength=K).argmax())
                    A.append(len(truth) / label.size)
    if not X:
        return None
    return np.stack(X), np.array(Y), np.array(A, np.float32)


def train_namer(X: np.ndarray, Y: np.ndarray, area: np.ndarray, num_classes: int, seed: int = 0,
                epochs: int = 40, members: int = 5) -> RegionNamer:
    """Fit the ensemble. Each sample weighs by its area (the score counts pixels) and its class by the
    inverse square root of its frequency (so person does not drown out sofa)."""
    namer = RegionNamer(num_classes, members=members)
    x, y = torch.from_numpy(X), torch.from_numpy(Y).long()
    namer.mean.copy_(x.mean(0))
    namer.scale.copy_(x.std(0) + 1e-4)
    count = torch.bincount(y, minlength=num_classes).float()
    class_weight = (count.sum() / count.clamp(min=1)).sqrt()
    sample_weight = torch.from_numpy(area / area.mean())
    with torch.random.fork_rng():  # seeded here for reproducible banks, without touching the caller's RNG
        for m in range(members):
            _fit_member(namer, m, x, y, class_weight, sample_weight, seed * 100 + m, epochs)
    return namer.eval()


def _fit_member(namer: RegionNamer, m: int, x, y, class_weight, sample_weight, seed: int, epochs: int) -> None:
    """Fit one member of the ensemble from fresh weights (the others are left as they are)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the initial weights and the dropout
    net = namer.members[m]
    for layer in net:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    namer.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(order), 256):
            b = order[i:i + 256]
            loss = nn.functional.cross_entropy(namer.logits(x[b], m), y[b], weight=class_weight, reduction="none")
            loss = (loss * sample_weight[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
