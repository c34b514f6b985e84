"""Finish a correction at the label's own size: upsample, add the prior, filter, refine."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..model.propagate import nearest_fill
from ..model.refiner import BAND_RADIUS, band, pixel_features, scale_for
from ..model.regions import components
from ..policy import NAME_LOST_OBJECT_BELIEF, OVERTURN_CONFIDENCE
from .colour import colour_log_likelihood
from .correction import Correction
from .guided import RADIUS, ImageGuide, pixel_grid_at, sample_at

# labels whose longer side exceeds BLOCKS_ABOVE are finished on f x f blocks, f the least that brings the
# longer side to at most BLOCK_GRID_AT_MOST (at least 2). VOC val at 500 px (2 x 2): blocks erased to 255
# 86.3 -> 86.0 mIoU, the paper's cells 50.5 -> 51.1, finishing 28 -> 16 ms a label on one thread; blind fill
# (blocks set to 0, dropped objects, clean labels) scores and changes the same, its finishing 39-43 -> 25 ms.
# A 2048 x 1536 label on 4 x 4 blocks takes 69 ms instead of 176 on 2 x 2 (at 1024 px, 3 x 3 blocks instead
# of 2 x 2 cost 0.6 mIoU on blocks and 1.0 on cells).
BLOCKS_ABOVE = 384
BLOCK_GRID_AT_MOST = 512


def finish_labels(correction: Correction, label: np.ndarray, hidden: np.ndarray, allowed: np.ndarray,
                  image: np.ndarray | None = None, band_inputs: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class and confidence per pixel at the original size: (H, W) long and (H, W) float.

    label (H, W) model indices; hidden (H, W) bool: pixels the prior must not use; allowed (H, W) bool:
    the pixels being decided. There, logits = upsampled model correction (with the background bias)
    + prior weight * one-hot(the full-resolution nearest known label); elsewhere the label is returned
    as it is, with confidence 1.
    With the image (H, W, 3) uint8, `correction.colour` weighs the colour evidence (colour.py) added
    to the logits, and with `correction.guided` the class probabilities are finished by the
    image-guided filter (guided.py), so boundaries inside holes follow the image's edges, and with
    `correction.refiners` the pixels near a boundary between background and an object are decided again,
    once per refiner (model/refiner.py). With `band_inputs` (a list), what a refiner after the last of them
    would read is appended to it as (ys, xs, features): the next refiner's training data.
    Allowed pixels that are not hidden (blind fill's labelled background) keep their label unless the
    model's confidence in the new class reaches OVERTURN_CONFIDENCE. Labels above BLOCKS_ABOVE are
    finished on blocks of `block_size` pixels a side (`_finish_on_blocks`).
    """
    if max(label.shape) > BLOCKS_ABOVE and band_inputs is None:
        return _finish_on_blocks(correction, label, hidden, allowed, image, block_size(label.shape))
    return _finish_full(correction, label, hidden, allowed, image, band_inputs)


def _finish_on_blocks(correction: Correction, label: np.ndarray, hidden: np.ndarray, allowed: np.ndarray,
                      image: np.ndarray | None, f: int) -> tuple[np.ndarray, np.ndarray]:
    """finish_labels on f x f blocks, for a large label.

    A block is decided where any of its pixels is, and known (its top-left pixel's label if that is
    known, else the largest known in it) where any is; the image is read at the blocks' top-left pixels.
    The decisions and confidences are repeated back over the blocks' decided pixels; the others keep
    their labels, and so do blind fill's labelled pixels whose block's decision is unsure (below
    OVERTURN_CONFIDENCE), whatever label the block had.
    """
    H, W = label.shape
    decided = torch.from_numpy(allowed)
    allowed_small = _block_max(decided.view(torch.uint8), f) > 0
    label_small = block_labels(torch.where(torch.from_numpy(hidden), -1, torch.from_numpy(label)), f).numpy()
    image_small = None if image is None else np.ascontiguousarray(image[::f, ::f])  # block means: no better
    pred_small, conf_small = _finish_full(correction, label_small, label_small < 0, allowed_small.numpy(), image_small)
    pred = torch.where(decided, _repeat_blocks(torch.from_numpy(pred_small), f, (H, W)), torch.from_numpy(label))
    conf = torch.where(decided, _repeat_blocks(torch.from_numpy(conf_small), f, (H, W)), torch.ones(()))
    pred, conf = pred.numpy(), conf.numpy()
    _keep_labels_where_unsure(pred, conf, label, hidden, allowed)
    return pred, conf


def _keep_labels_where_unsure(pred: np.ndarray, conf: np.ndarray, label: np.ndarray, hidden: np.ndarray,
                              allowed: np.ndarray) -> None:
    """Blind fill: a labelled pixel (allowed, not hidden) is evidence; it is overturned only by a sure
    model (OVERTURN_CONFIDENCE), in place."""
    overturned = allowed & ~hidden
    if overturned.any():
        unsure = overturned & (conf < OVERTURN_CONFIDENCE)
        pred[unsure] = label[unsure]


def block_size(shape: tuple[int, int]) -> int:
    """The side of the blocks a large label is finished on (`_finish_on_blocks`)."""
    return max(2, -(-max(shape) // BLOCK_GRID_AT_MOST))


def _block_max(a: torch.Tensor, f: int) -> torch.Tensor:
    """(H, W) integers -> (ceil(H/f), ceil(W/f)): the largest in each f x f block (the last blocks may be
    cut short). Through float32, exact for labels and masks."""
    return F.max_pool2d(a[None].float(), f, f, ceil_mode=True)[0].to(a.dtype)


def _repeat_blocks(small: torch.Tensor, f: int, shape: tuple[int, int]) -> torch.Tensor:
    """(h, w) -> (H, W) = shape: each value over its f x f block."""
    h, w = small.shape
    return small[:, None, :, None].expand(h, f, w, f).reshape(h * f, w * f)[:shape[0], :shape[1]]


def block_labels(known: torch.Tensor, f: int = 2) -> torch.Tensor:
    """(H, W) labels, -1 unknown -> (ceil(H/f), ceil(W/f)) per f x f block: its top-left pixel's label if
    known, else the largest known in it (-1: none known)."""
    top_left = known[::f, ::f]
    return torch.where(top_left >= 0, top_left, _block_max(known, f))


def _finish_full(correction: Correction, label: np.ndarray, hidden: np.ndarray, allowed: np.ndarray,
                  image: np.ndarray | None = None, band_inputs: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """finish_labels at the label's own size."""
    H, W = label.shape
    pred = label.copy()
    conf = np.ones((H, W), np.float32)
    if not allowed.any():
        return pred, conf
    where = torch.from_numpy(allowed)
    index = torch.nonzero(where.flatten())[:, 0]  # (N,) flat positions of the decided pixels
    grid = pixel_grid_at(index, (H, W))  # shared by the upsampling here and the guided filter
    model_logits = correction.final_logits()  # (K, S, S)
    nearest = None
    if correction.prior_weight or (image is not None and (correction.guided or correction.colour)):
        # every pixel is within `reach` model pixels of a known one; at full size that bounds the
        # search (plus a cell and a half for the model grid's coarser sampling of the holes)
        cell = max(H, W) / model_logits.shape[-1]
        bound = (correction.reach + 1.5) * cell + 2
        nearest = nearest_known_label(label, hidden, bound).flatten()  # (H*W,)
    K = model_logits.shape[0]
    # only the classes that can win somewhere are upsampled (usually 2 to 5 of K); the others enter
    # the softmax as one channel, the log-sum-exp of their logits
    in_play = classes_that_can_win(model_logits, grid)
    known_classes = None
    if nearest is not None:
        known_classes = torch.bincount(nearest, minlength=K) > 0  # (K,)
        in_play |= known_classes
    present = torch.nonzero(in_play)[:, 0]  # (C,)
    maps = model_logits[present]  # (C, S, S)
    if len(present) < K:
        maps = torch.cat([maps, model_logits[~in_play].logsumexp(0, keepdim=True)])  # (C+1, S, S)
    logits = sample_at(maps, grid)  # (C[+1], N)
    if correction.colour and image is not None:
        # the other classes' row keeps 0: none of them has known pixels (`nearest` put those in play)
        evidence = colour_log_likelihood(image, label, hidden, present, index)  # (C, N)
        logits[:len(present)] += correction.colour * evidence
    if correction.prior_weight:
        slot = torch.full((K,), -1, dtype=torch.long)
        slot[present] = torch.arange(len(present))
        rows = slot.index_select(0, nearest.index_select(0, index))  # (N,) each pixel's nearest class's row
        logits.scatter_add_(0, rows[None], torch.full((1, len(index)), float(correction.prior_weight)))
    # softmax over the few class rows, written out: torch's softmax is slow along a short dimension
    logits -= logits.amax(0)
    probs = logits.exp_()
    probs = (probs[:len(present)] / probs.sum(0)).t()  # (N, C)
    c, p = probs.max(1)
    refining = image is not None and (bool(correction.refiners) or band_inputs is not None)
    if correction.guided and image is not None:
        # the boundary refiner takes the place of the filter's second pass: as good, and cheaper
        c, p = _guided_finish(probs, present, p, nearest, known_classes, where, index, grid, image,
                              correction.radius, second_pass=not refining)
    else:
        p = present.index_select(0, p)
    pred[allowed] = p.numpy()
    conf[allowed] = c.numpy()
    if refining:
        _refine_boundaries(correction, probs, present, index, pred, conf, label, allowed, image, band_inputs)
    _keep_labels_where_unsure(pred, conf, label, hidden, allowed)
    return pred, conf


def _refine_boundaries(correction: Correction, probs: torch.Tensor, present: torch.Tensor, index: torch.Tensor,
                       pred: np.ndarray, conf: np.ndarray, label: np.ndarray, allowed: np.ndarray, image: np.ndarray,
                       band_inputs: list | None) -> None:
    """Decide the band along the background/object boundaries again (model/refiner.py), once per refiner, in place.

    probs (N, C) the model's probabilities at the allowed pixels (flat positions `index`, row-major) for
    the classes `present` (C,); pred and conf (H, W) the decisions so far. A pixel a refiner calls an
    object keeps the object decided there, or takes the likeliest one; its confidence becomes the model's
    probability for its new class. Each refiner reads the band of the boundaries the one before it moved.
    With `band_inputs`, what a refiner after the last would read is appended to it."""
    bg = correction.background
    columns = (present == bg).nonzero()
    if bg is None or not len(columns) or len(present) < 2:
        return
    column = int(columns[0, 0])
    scale = scale_for(pred.shape)
    p_background = np.zeros(pred.shape, np.float32)
    p_background[allowed] = probs[:, column].numpy()
    passes = list(correction.refiners) + ([None] if band_inputs is not None else [])
    for refiner in passes:
        ys, xs = np.nonzero(band(pred, allowed, bg, BAND_RADIUS * scale))
        if not len(ys):
            return
        x = pixel_features(image, label, allowed, p_background, pred, bg, ys, xs, scale)
        if refiner is None:
            band_inputs.append((ys, xs, x))
            return
        with torch.no_grad():
            to_background = (refiner(x) > 0).numpy()
        rows = torch.from_numpy(np.searchsorted(index.numpy(), ys * pred.shape[1] + xs))  # the band's rows of probs
        others = probs.index_select(0, rows)  # (n, C)
        others[:, column] = -1
        p_object, likeliest = others.max(1)  # (n,) the likeliest object at each band pixel
        was = pred[ys, xs]
        new = np.where(to_background, bg, np.where(was != bg, was, present.index_select(0, likeliest).numpy()))
        changed = new != was
        if changed.any():
            cy, cx, cn = ys[changed], xs[changed], new[changed]
            pred[cy, cx] = cn
            conf[cy, cx] = np.where(cn == bg, p_background[cy, cx], p_object.numpy()[changed])


def name_lost_objects(correction: Correction, pred: np.ndarray, conf: np.ndarray, lost: np.ndarray) -> None:
    """Each region of `lost` (H, W) bool, an object that lost its class, takes the object class the model finds
    likeliest over it, in place; a region where the model's mean object probability is below
    NAME_LOST_OBJECT_BELIEF keeps the decisions made (most likely background it was right to call so).

    The model's probabilities are read at its grid (K, S, S), weighted by the share of each grid cell the
    region covers."""
    bg = correction.background
    if bg is None or not lost.any():
        return
    probs = correction.final_logits().float().softmax(0)  # (K, S, S)
    S = probs.shape[-1]
    region, n = components(lost)
    for k in range(n):
        inside = region == k
        share = F.adaptive_avg_pool2d(torch.from_numpy(inside).float()[None, None], (S, S))[0, 0]  # (S, S)
        mean = (probs * share).sum((1, 2)) / share.sum().clamp_min(1e-6)  # (K,)
        if 1.0 - float(mean[bg]) < NAME_LOST_OBJECT_BELIEF:
            continue
        mean[bg] = -1.0
        best = int(mean.argmax())
        pred[inside] = best
        conf[inside] = float(mean[best])


NEAREST_AT_HALF_SIZE_ABOVE = 256  # images whose longer side exceeds this get the nearest known label at half size


def nearest_known_label(label: np.ndarray, hidden: np.ndarray, bound: float) -> torch.Tensor:
    """(H, W) long: every hidden pixel gets the label of its nearest known pixel; known pixels keep theirs.

    label (H, W) model indices; hidden (H, W) bool; bound: no pixel is farther than this from a known one.
    Large images are searched at half size, on 2 x 2 blocks that are known where any of their pixels
    is; that moves the line between two nearest labels by a pixel or so and costs a quarter.
    """
    known_label = torch.from_numpy(np.where(hidden, -1, label))  # (H, W)
    H, W = label.shape
    if max(H, W) <= NEAREST_AT_HALF_SIZE_ABOVE:
        # at full size the rare near-tie the mending passes would settle does not matter: skip them
        return nearest_fill(known_label[None], max_distance=bound, mend=False)[0]
    block_label = block_labels(known_label)  # (h, w)
    half = nearest_fill(block_label[None], max_distance=bound / 2 + 1, mend=False)[0]  # (h, w)
    up = _repeat_blocks(half, 2, (H, W))
    return torch.where(known_label >= 0, known_label, up)


def classes_that_can_win(logits: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(K,) bool: the classes that can be the most probable at some pixel of `grid` after upsampling.

    logits (K, S, S) at the model grid; grid a `pixel_grid`. Between four neighbouring model pixels the
    upsampled logits are bilinear, so a class whose largest corner value is below another class's
    smallest corner value loses everywhere inside that cell. Adding the one-hot prior only helps its
    own class, which the caller keeps in play anyway.
    """
    K, S, _ = logits.shape
    if S < 2:
        return torch.ones(K, dtype=torch.bool)
    # the cell (pair of model rows and columns) each pixel falls in; border padding clamps to the edge
    xy = ((grid.view(-1, 2) + 1) * S - 1) / 2
    cell = xy.floor().long().clamp_(0, S - 2)
    used = torch.zeros(S - 1, S - 1, dtype=torch.bool)
    used[cell[:, 1], cell[:, 0]] = True
    y, x = torch.nonzero(used, as_tuple=True)
    top_left = y * S + x  # (M,) flat index of each used cell's first corner
    flat = logits.flatten(1)
    corners = flat.index_select(1, torch.cat([top_left, top_left + 1, top_left + S, top_left + S + 1]))
    corners = corners.view(K, 4, -1)  # (K, 4, M)
    high, low = corners.amax(1), corners.amin(1)  # (K, M)
    return (high >= low.amax(0) - 1e-4).any(1)


def _guided_finish(probs: torch.Tensor, classes: torch.Tensor, best: torch.Tensor, nearest: torch.Tensor,
                   known_classes: torch.Tensor, where: torch.Tensor, index: torch.Tensor, grid: torch.Tensor,
                   image: np.ndarray, radius: float = RADIUS, second_pass: bool = True):
    """Guided-filter the class maps of the classes in play; -> (confidence, class) per decided pixel.

    probs (N, C) at the decided pixels for the classes `classes` (C,), best (N,) the column of the
    most probable; nearest (H*W,) the nearest known label, known_classes (K,) bool the classes in it
    (all among `classes`); where (H, W) bool, index (N,) its flat positions and grid its
    `pixel_grid`; image (H, W, 3) uint8; radius: the filter's window (guided.py); second_pass: filter
    the first pass's decisions again.
    """
    # only classes that are known nearby or that the model proposes take part (usually 2 to 5)
    in_play = known_classes[classes] | (torch.bincount(best, minlength=len(classes)) > 0)
    present = torch.nonzero(in_play)[:, 0]  # (G,) columns of probs
    G = len(present)
    if G == 1:  # one class in play: nothing to decide
        chosen = present.expand(len(index))
        return probs.gather(1, chosen[:, None])[:, 0], classes.index_select(0, chosen)
    column = torch.full(known_classes.shape, -1, dtype=torch.long)  # class -> its column among the G
    column[classes[present]] = torch.arange(G)
    rgb = torch.from_numpy(image).permute(2, 0, 1).contiguous().float().div_(255.0)  # (3, H, W)
    guide = ImageGuide(rgb, where, radius=radius, grid=grid, index=index)
    # the maps are the known labels' one-hot outside the hole and the model's values inside it; only
    # their per-cell sums are needed: those of the known part are counted once (the hole's pixels go
    # to a spare slot), those of the hole are added per pass
    cells = guide.area.numel()
    slot_of = torch.where(guide.where, cells * G, guide.cell * G + column.index_select(0, nearest))
    known = torch.zeros(cells * G + 1).scatter_add_(0, slot_of, torch.ones(slot_of.shape))[:-1].view(cells, G)

    def most_filtered(small: torch.Tensor) -> torch.Tensor:
        """(G, h, w) shrunk class maps -> (N,) the class whose filtered map is largest at each pixel.

        The filter is linear in the maps, so it filters the G - 1 differences to class 0: a channel less.
        """
        lead, which = guide.filter_small(small[1:] - small[:1]).max(0)  # (N,)
        return torch.where(lead > 0, which + 1, 0)

    pick = most_filtered(guide.shrink_sparse(known, probs[:, present]))  # (N,)
    if second_pass:
        # a second pass over the first pass's hard decisions settles boundaries further from the known
        # labels (VOC val, labelfix bench: +0.3 / +1.8 / +1.0 PA-mIoU at ratios 0.3 / 0.5 / 0.7; about
        # neutral on erased blocks)
        hard = F.one_hot(pick, G).float()  # (N, G)
        pick = most_filtered(guide.shrink_sparse(known, hard))
    chosen = present.index_select(0, pick)  # (N,)
    # the confidence stays the model's probability for the class chosen
    return probs.gather(1, chosen[:, None])[:, 0], classes.index_select(0, chosen)
