import numpy as np
import pytest

from labelfix.policy import REVIEW_ORPHANED
from labelfix.repair.erasure import (
    find_erasures,
    orphaned_interiors,
    orphaned_outline,
    outline_lines,
    row_runs,
    with_margin,
)


def disc(h, w, cy, cx, r):
    ys, xs = np.mgrid[:h, :w]
    return (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r


def outlined_label(h=120, w=160):
    """VOC style in model indices: two round objects on background, each outlined with -1."""
    label = np.zeros((h, w), np.int64)
    a, b = disc(h, w, 60, 50, 35), disc(h, w, 50, 125, 25)
    label[a], label[b] = 3, 7
    for obj in (a, b):
        ring = disc(h, w, 0, 0, 0)  # all False
        ring[1:] |= obj[1:] != obj[:-1]
        ring[:, 1:] |= obj[:, 1:] != obj[:, :-1]
        label[ring] = -1
    return label


def test_a_clean_outlined_label_has_no_erasures():
    assert not find_erasures(outlined_label(), 0).any()


def test_a_block_erased_from_an_object_is_found_and_nothing_else():
    label = outlined_label()
    block = np.zeros(label.shape, bool)
    block[40:75, 30:80] = True  # cuts through object 3 and the background beside it
    erased_object = block & (label == 3)
    damaged = np.where(block, 0, label)
    found = find_erasures(damaged, 0)
    assert (found & erased_object).sum() >= 0.9 * erased_object.sum()
    assert not (found & ~block).any()
    assert (damaged[found] == 0).all()  # only background is reported


def test_a_block_inside_an_object_is_found_from_all_four_sides():
    label = outlined_label()
    damaged = label.copy()
    damaged[45:70, 35:65] = 0
    found = find_erasures(damaged, 0)
    assert found[45:70, 35:65].all() and found.sum() == 25 * 30


def test_the_margin_of_an_erasure_is_the_background_beside_it():
    label = outlined_label()
    erased = np.zeros(label.shape, bool)
    erased[40:60, 0:20] = True
    grown = with_margin(erased, label == 0, 3)
    ys, xs = np.nonzero(grown & ~erased)
    assert ys.min() == 37 and ys.max() == 62 and xs.max() == 22
    assert (label[grown & ~erased] == 0).all()  # never an object or its outline
    assert (with_margin(erased, label == 0, 0) == erased).all()


def test_labels_without_outlines_prove_nothing():
    label = outlined_label()
    label[label < 0] = 0  # objects touch background everywhere: a straight edge is no evidence
    label[40:75, 30:80] = 0
    assert not find_erasures(label, 0).any()


def test_edges_too_short_or_through_the_outline_are_ignored():
    label = outlined_label()
    damaged = label.copy()
    damaged[55:60, 45:50] = 0  # a 5 x 5 hole: shorter than the shortest cut edge
    assert not find_erasures(damaged, 0).any()
    background_only = np.zeros((50, 50), np.int64)
    assert not find_erasures(background_only, 0).any()


def test_an_object_relabelled_to_background_leaves_an_orphaned_outline():
    label = outlined_label()
    assert orphaned_outline(label, 0) < REVIEW_ORPHANED
    dropped = np.where(label == 3, 0, label)  # the bigger object loses its class, its outline stays
    assert orphaned_outline(dropped, 0) >= REVIEW_ORPHANED
    assert orphaned_outline(np.zeros((20, 20), np.int64), 0) == 0.0


def test_the_background_inside_an_orphaned_outline_is_the_object_that_lost_its_class():
    label = outlined_label()
    assert not orphaned_interiors(label, 0).any()  # every outline holds its object
    dropped = np.where(label == 3, 0, label)
    assert (orphaned_interiors(dropped, 0) == (label == 3)).all()
    assert not orphaned_interiors(np.where(dropped < 0, 0, dropped), 0).any()  # no outlines: nothing enclosed


def test_background_that_a_lost_object_cuts_off_along_the_border_is_not_its_interior():
    label = np.zeros((120, 160), np.int64)
    label[:, 60:100] = 5  # an object from the top of the label to its bottom, outlined left and right
    label[:, [59, 100]] = -1
    found = orphaned_interiors(np.where(label == 5, 0, label), 0)
    assert (found == (label == 5)).all()  # not the background left and right of it


@pytest.mark.parametrize("scale", [1, 4])  # 4: a label large enough to be read at half size
def test_outline_lines_are_the_thin_unlabelled_pixels_not_the_wide_ones(scale):
    label = np.kron(outlined_label(), np.ones((scale, scale), np.int64))
    unlabelled = label < 0
    wide = np.zeros(label.shape, bool)
    wide[5 * scale:25 * scale, 100 * scale:130 * scale] = True  # an unlabelled region, not a line
    lines = outline_lines(unlabelled | wide)
    assert lines[unlabelled & ~wide].mean() > 0.97  # the rings: lines
    assert not lines[wide].any()
    assert not outline_lines(np.zeros((10, 10), bool)).any()


@pytest.mark.parametrize("min_length", [1, 3])
def test_row_runs_match_a_plain_loop(min_length):
    mask = np.random.default_rng(min_length).random((13, 17)) < 0.6  # runs that touch both row ends too
    want = []
    for y in range(13):
        x = 0
        while x < 17:
            if mask[y, x]:
                x0 = x
                while x < 17 and mask[y, x]:
                    x += 1
                if x - x0 >= min_length:
                    want.append((y, x0, x))
            x += 1
    assert list(zip(*(a.tolist() for a in row_runs(mask, min_length)))) == want
