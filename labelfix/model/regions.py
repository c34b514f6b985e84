"""Connected regions of a mask, pure numpy: runs along rows, and 4-connected components built from them."""

from __future__ import annotations

import numpy as np


def row_runs(cond: np.ndarray, min_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True at least `min_length` long: row, first and one-past-last column, each (R,)."""
    H, W = cond.shape
    padded = np.zeros((H, W + 2), np.int8)
    padded[:, 1:-1] = cond
    step = np.diff(padded, axis=1).ravel()  # (H * (W + 1),): +1 where a run starts, -1 one past its end
    flat = np.flatnonzero(step)  # row-major: each start is followed by its end (one scan, not two)
    starts, ends = flat[0::2], flat[1::2]
    rows = starts // (W + 1)
    starts, ends = starts - rows * (W + 1), ends - rows * (W + 1)
    long = ends - starts >= min_length
    return rows[long], starts[long], ends[long]


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
