"""The downstream benchmark's split and damage (benchmarks/downstream.py)."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from downstream import damage, split_halves  # noqa: E402


def test_the_halves_share_no_file_and_cover_the_split():
    ids = [f"2008_{i:06d}" for i in range(1015)]
    a, b = split_halves(ids, seed=0)
    assert not set(a) & set(b) and sorted(a + b) == ids and abs(len(a) - len(b)) <= 1
    assert split_halves(ids, seed=0) == (a, b) and split_halves(ids, seed=1) != (a, b)


def test_the_paper_damage_obscures_half_the_cells_and_forgotten_objects_take_their_outline():
    label = np.zeros((56, 56), np.uint8)
    label[10:30, 10:30] = 8
    label[9, 9:31] = label[30, 9:31] = label[9:31, 9] = label[9:31, 30] = 255  # its outline
    label[35:50, 35:50] = 15
    paper = damage(label, "paper", np.random.default_rng(0))
    assert abs((paper == 255).mean() - 0.5) < 0.05 + (label == 255).mean()
    dropped = 0
    for seed in range(20):
        forgotten = damage(label, "forgotten", np.random.default_rng(seed))
        if not (forgotten == 8).any():
            dropped += 1
            assert not (forgotten[8:32, 8:32] == 255).any()  # no outline left where the object was
        assert set(np.unique(forgotten)) <= {0, 8, 15, 255}
    assert 0 < dropped < 20
