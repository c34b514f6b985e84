"""What a label's outlines give away about its damage (blind repair).

Datasets in the VOC style outline every object with the ignore value: object and background never
touch. Erase a block of such a label to background and the cut shows: along the block's straight,
axis-aligned edges, object pixels touch background directly. Those edges say where the hole is:
the background next to them, out to the block's far side, was most likely object before.

`find_erasures` reports that background as erased, so repair can treat it like declared missing
pixels. It only speaks for labels that follow the outline convention: when objects meet background
directly elsewhere too (labels drawn without outlines), a straight edge proves nothing and it
reports nothing. It cannot see where a block ends inside real background, so it reaches on to the
far side of that background; repair's model keeps what is background there.

`python benchmarks/erasures.py --data voc2012`: on VOC 2012's 1,304 labels, at 256 and 500 px, it
marks nothing in the clean labels nor in the same labels drawn without outlines; with random blocks
set to background it finds 95% of the erased object pixels.

An object relabelled to background leaves its outline behind, a thin ring of the ignore value with
background on both sides. `orphaned_outline` measures how much of the outline is like that, so the
report can send such labels to review. `orphaned_interiors` finds the background such a ring encloses, the
object's own pixels: repair gives them the object class the model finds likeliest there.

Pure numpy on one (H, W) label; a few milliseconds at 500 x 375.
"""

from __future__ import annotations

import numpy as np

from ..model.regions import components, row_runs

MIN_EDGE = 0.03          # shortest cut edge, as a share of the label's longer side (at least 8 px)
MIN_DIRECT = 0.6         # share of a cut edge where object touches background directly (not outline)
MAX_LOOSE_CONTACT = 0.3  # more direct contact outside cut edges than this share: no outline convention
MAX_OUTLINE_WIDTH = 0.02  # thickest outline crossing, as a share of the longer side (at least 4 px)
MAX_BORDER_SHARE = 0.3  # an enclosed region has at most this share of its edge on the image's border
MIN_ORPHANED_CONTACT = 0.6  # and at least this share of the outline it touches has background on both sides
OUTLINES_AT_HALF_SIZE_ABOVE = 320  # labels whose longer side exceeds this have their outlines read at half size


def _top_edges(bg: np.ndarray, obj: np.ndarray, outline: np.ndarray, min_length: int) -> list[tuple[int, int, int]]:
    """Straight top edges of holes: (row, first column, one past the last), the row being background's.

    A top edge is a row where background has object (or its outline) just above it, at least
    `min_length` long and mostly touching object directly.
    """
    touching = np.zeros(bg.shape, bool)
    direct = np.zeros(bg.shape, bool)
    touching[1:] = bg[1:] & (obj | outline)[:-1]
    direct[1:] = bg[1:] & obj[:-1]
    return [(y, x0, x1) for y, x0, x1 in zip(*row_runs(touching, min_length))
            if direct[y, x0:x1].mean() >= MIN_DIRECT]


def _below(bg: np.ndarray, edges: list[tuple[int, int, int]]) -> np.ndarray:
    """(H, W) bool: under each top edge, the rows down to where its width stops being all background."""
    under = np.zeros(bg.shape, bool)
    for y, x0, x1 in edges:
        still_bg = bg[y:, x0:x1].all(1)  # (H - y,)
        depth = len(still_bg) if still_bg.all() else int(np.argmin(still_bg))
        under[y:y + depth, x0:x1] = True
    return under


def _touches(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with a 4-neighbour in `mask`."""
    out = np.zeros_like(mask)
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def find_erasures(label: np.ndarray, background_index: int) -> np.ndarray:
    """(H, W) bool: background pixels that look erased, cut off from objects along straight edges.

    label (H, W) model indices, -1 = unlabelled (the outline). Empty unless the label outlines its
    objects: background must touch the outline rather than objects everywhere but the cut edges.
    """
    bg = label == background_index
    outline = label < 0
    obj = ~bg & ~outline
    if not obj.any() or not outline.any():
        return np.zeros(label.shape, bool)
    min_length = max(8, round(MIN_EDGE * max(label.shape)))
    direct = bg & _touches(obj)  # background touching an object, not its outline
    if direct.sum() < MIN_DIRECT * min_length:  # too little for one cut edge (most clean labels)
        return np.zeros(label.shape, bool)
    edges, on_edges = [], np.zeros(label.shape, bool)
    for k in range(4):  # each side of a hole, turned to be its top edge
        turned = [np.rot90(a, k) for a in (bg, obj, outline)]
        edges.append((turned[0], _top_edges(*turned, min_length)))
        marks = np.zeros(turned[0].shape, bool)
        for y, x0, x1 in edges[-1][1]:
            marks[y, x0:x1] = True
        on_edges |= np.rot90(marks, -k)
    if not on_edges.any():
        return on_edges
    # the outline test comes before the (costlier) reach of the edges: a label drawn without outlines
    # has straight contact everywhere
    loose = (direct & ~on_edges).sum()  # direct contact the cut edges do not explain
    if loose > MAX_LOOSE_CONTACT * (loose + (bg & _touches(outline)).sum()):
        return np.zeros(label.shape, bool)
    erased = np.zeros(label.shape, bool)
    for k, (bg_turned, found) in enumerate(edges):
        erased |= np.rot90(_below(bg_turned, found), -k)
    return erased


def with_margin(erased: np.ndarray, background: np.ndarray, margin: int) -> np.ndarray:
    """(H, W) bool: `erased` and the `background` pixels within `margin` px of it (a square around each)."""
    if margin < 1 or not erased.any():
        return erased
    return erased | (background & (_square_sum(erased, 2 * margin + 1) > 0))


def _thin_crossings(label: np.ndarray, background_index: int, max_width: int) -> np.ndarray:
    """Flat indices of the outline pixels (label < 0) in runs along rows at most `max_width` long with
    background at both ends."""
    H, W = label.shape
    rows, starts, ends = row_runs(label < 0, 1)
    keep = (ends - starts <= max_width) & (starts > 0) & (ends < W)
    rows, starts, ends = rows[keep], starts[keep], ends[keep]
    keep = (label[rows, starts - 1] == background_index) & (label[rows, ends] == background_index)
    rows, starts, lengths = rows[keep], starts[keep], (ends - starts)[keep]
    # every pixel of every kept run: run start repeated, plus its offset within the run
    first = np.repeat(rows * W + starts, lengths)
    offset = np.arange(len(first)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return first + offset


def outline_lines(unlabelled: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool: the unlabelled pixels in lines no thicker than an outline (those not
    covered by any square of unlabelled pixels a little wider than MAX_OUTLINE_WIDTH).

    Filling such a line is deciding where a boundary runs within it, which is uncertain by nature."""
    if not unlabelled.any():
        return unlabelled.copy()
    width = max(4, round(MAX_OUTLINE_WIDTH * max(unlabelled.shape)))
    # large labels: every other row and column (a thin line stays thin, a wide region wide)
    step = 2 if max(unlabelled.shape) > OUTLINES_AT_HALF_SIZE_ABOVE else 1
    sample = unlabelled[::step, ::step]
    side = 2 * ((width // step + 1) // 2) + 1  # odd, wider than the widest outline
    eroded = _square_sum(sample, side) == side * side  # centres of all-unlabelled squares
    wide = _square_sum(eroded, side) > 0  # opening: the pixels those squares cover
    if step > 1:
        wide = wide.repeat(step, 0).repeat(step, 1)[:unlabelled.shape[0], :unlabelled.shape[1]]
    return unlabelled & ~wide


def _square_sum(mask: np.ndarray, side: int) -> np.ndarray:
    """(H, W) bool -> (H, W) int: set pixels in the side x side square centred on each pixel (side odd;
    outside the label counts as unset), from an integral image."""
    r = side // 2
    H, W = mask.shape
    integral = np.zeros((H + side, W + side), np.int32)
    integral[r + 1:r + 1 + H, r + 1:r + 1 + W] = mask
    integral = integral.cumsum(0).cumsum(1)
    return (integral[side:, side:] - integral[:H, side:] - integral[side:, :W] + integral[:H, :W])


def _orphaned_crossings(label: np.ndarray, background_index: int) -> np.ndarray:
    """(H, W) bool: the outline pixels (label < 0) in thin runs, along rows or columns, with background at
    both ends."""
    H, W = label.shape
    width = max(4, round(MAX_OUTLINE_WIDTH * max(label.shape)))
    crossing = np.zeros(H * W, bool)
    crossing[_thin_crossings(label, background_index, width)] = True
    along_columns = _thin_crossings(label.T, background_index, width)  # flat in the transposed (W, H)
    crossing[(along_columns % H) * W + along_columns // H] = True
    return crossing.reshape(H, W)


def orphaned_outline(label: np.ndarray, background_index: int) -> float:
    """Share of the outline (label < 0) crossed from background to background within a few pixels.

    label (H, W) model indices. Around an object the outline has the object on one side; relabel the
    object to background and its whole ring becomes such a crossing. On VOC's 1,304 clean labels (at
    256 and 500 px) 0.2% reach 0.3; with about half of each label's classes set to background, 83% do.
    """
    if max(label.shape) > OUTLINES_AT_HALF_SIZE_ABOVE:
        # every other row and column: the outline stays (VOC's is about 5 px wide at full size) at a quarter
        # of the cost
        label = label[::2, ::2]
    total = int((label < 0).sum())
    if total == 0:
        return 0.0
    return int(_orphaned_crossings(label, background_index).sum()) / total


def orphaned_interiors(label: np.ndarray, background_index: int) -> np.ndarray:
    """(H, W) bool: the background regions that an orphaned outline encloses, objects that lost their class.

    label (H, W) model indices, -1 = unlabelled. A 4-connected background region is such an interior when
    it is no speck, touches objects directly on less than a tenth of its contacts (it is outlined), at least
    MIN_ORPHANED_CONTACT of the outline it touches has background on both sides (no object holds it), and at
    most MAX_BORDER_SHARE of its edge is the image's border (background cut off by an object runs along the
    border). VOC val at 256 px, about half of each label's classes set to background with their outline kept:
    83% of the dropped pixels, and 1.5% of the others (which the model mostly keeps as background: naming
    waits for its belief, policy.NAME_LOST_OBJECT_BELIEF); on the 289 clean labels, with blocks set to
    background, or with objects forgotten outline and all: none.
    """
    bg, outline = label == background_index, label < 0
    region, n = components(bg)
    if n < 2 or not outline.any():
        return np.zeros(label.shape, bool)
    crossing = _orphaned_crossings(label, background_index)
    touched_outline, touched_orphaned, touched_object = (np.zeros(n, np.int64) for _ in range(3))
    for here, there in _NEIGHBOURS:  # each background pixel's four neighbours
        r, nb_outline, nb_bg = region[here], outline[there], bg[there]
        inside = r >= 0
        touched_outline += np.bincount(r[inside & nb_outline], minlength=n)
        touched_orphaned += np.bincount(r[inside & nb_outline & crossing[there]], minlength=n)
        touched_object += np.bincount(r[inside & ~nb_outline & ~nb_bg], minlength=n)
    edge = np.concatenate([region[0], region[-1], region[:, 0], region[:, -1]])
    on_border = np.bincount(edge[edge >= 0], minlength=n)
    size = np.bincount(region[region >= 0], minlength=n)
    smallest = (MIN_EDGE * max(label.shape)) ** 2  # less than a short cut edge squared: a speck, not an object
    enclosed = ((size >= smallest) & (touched_outline > 0)
                & (touched_orphaned >= MIN_ORPHANED_CONTACT * touched_outline)
                & (10 * touched_object < touched_outline + touched_object)
                & (on_border < MAX_BORDER_SHARE * (touched_outline + on_border)))
    return (region >= 0) & enclosed[np.maximum(region, 0)]


_ALL, _BUT_FIRST, _BUT_LAST = slice(None), slice(1, None), slice(None, -1)
# (pixels, their neighbour) as slice pairs: the neighbour above, below, to the left, to the right
_NEIGHBOURS = [((_BUT_FIRST, _ALL), (_BUT_LAST, _ALL)), ((_BUT_LAST, _ALL), (_BUT_FIRST, _ALL)),
               ((_ALL, _BUT_FIRST), (_ALL, _BUT_LAST)), ((_ALL, _BUT_LAST), (_ALL, _BUT_FIRST))]
