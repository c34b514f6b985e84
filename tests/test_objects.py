from collections import deque

import numpy as np
import pytest
import torch

from conftest import make_dataset, synthetic_pair
from labelfix.data import open_dataset
from labelfix.objects import (RegionNamer, components, dropped_pieces, num_features, restore_dropped,
                              train_namer, training_samples)


def flood_components(mask: np.ndarray) -> np.ndarray:
    """Reference: 4-connected components by breadth-first search."""
    out = np.full(mask.shape, -1)
    n = 0
    for start in zip(*np.nonzero(mask)):
        if out[start] >= 0:
            continue
        out[start] = n
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for v, u in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and mask[v, u] and out[v, u] < 0:
                    out[v, u] = n
                    queue.append((v, u))
        n += 1
    return out


@pytest.mark.parametrize("seed", range(4))
def test_components_match_a_flood_fill(seed):
    mask = np.random.default_rng(seed).random((37, 41)) < 0.55
    ids, n = components(mask)
    reference = flood_components(mask)
    assert n == reference.max() + 1
    assert ((ids >= 0) == mask).all()
    # the same partition: each id pairs with exactly one reference id
    pairs = set(zip(ids[mask].tolist(), reference[mask].tolist()))
    assert len(pairs) == n == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def outlined_square(c: int = 2) -> np.ndarray:
    label = np.zeros((64, 64), np.int64)
    label[12:52, 10:50] = c
    label[11:53, 9:51][[0, -1]] = -1
    label[11:53, 9:51][:, [0, -1]] = -1
    return label


def test_an_object_relabelled_to_background_is_a_candidate_and_a_clean_label_has_none():
    label = outlined_square()
    assert len(dropped_pieces(label, 0)[1]) == 0
    dropped = np.where(label == 2, 0, label)
    pieces, ids, topology, links = dropped_pieces(dropped, 0)
    # both sides of the orphaned ring are candidates: the object and the background around it
    inside = pieces[30, 30]
    assert inside in ids and pieces[0, 0] in ids and len(ids) == 2
    assert (pieces == inside).sum() == (label == 2).sum()
    assert np.isfinite(topology).all()
    excluded = dropped_pieces(dropped, 0, exclude=pieces == inside)[1]
    assert inside not in excluded and len(excluded) == 1


@pytest.fixture(scope="module")
def namer(tmp_path_factory):
    """A namer trained on synthetic labels: coloured rectangles, one colour per class, outlined."""
    root = make_dataset(tmp_path_factory.mktemp("objects") / "synth", n_train=40, n_val=1, seed=3)
    ds = open_dataset(root)
    X, Y, A = training_samples(ds.pairs("train"), ds.classes, np.random.default_rng(0))
    assert X.shape[1] == num_features(5) and set(Y) > {0}
    return train_namer(X, Y, A, 5, epochs=30, members=2)


def test_a_dropped_object_gets_its_class_back_and_nothing_else_changes(namer):
    rng = np.random.default_rng(7)
    right = dropped = 0
    for _ in range(12):
        image, raw = synthetic_pair(rng, 64, 64)
        label = np.where(raw == 255, -1, raw.astype(np.int64))
        classes = [c for c in np.unique(label) if c > 0]
        gone = label == classes[0]
        damaged = np.where(gone, 0, label)
        restored, probability = restore_dropped(image, damaged, 0, namer, 0.0)
        given = restored >= 0
        assert (damaged[given] == 0).all()  # only background is given a class
        assert ((probability > 0) == given).all() and (probability <= 1).all()
        right += int((restored[gone] == label[gone]).sum())
        dropped += int(gone.sum())
    assert right > 0.7 * dropped


def test_linked_named_pieces_take_one_class():
    from labelfix.objects import _joint_names

    area = np.array([2.0, 2.0, 2.0, 1.0])  # pixels of pieces 0..3
    ids = np.array([0, 1, 2, 3])
    named = np.array([False, True, True, True])
    links = np.array([[0, 1, 2], [1, 2, 0]])  # 1 and 2 meet across the outline; 3 stands alone
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.1, 0.1, 0.8]])
    best = probs.argmax(1)
    assert best.tolist() == [0, 1, 2, 2]
    joint = _joint_names(area, ids, named, links, probs, best, 0)
    # the group {1, 2}, both 2 pixels: class 1 has 2 * 0.7 + 2 * 0.3 = 2.0 against class 2's 2 * 0.1 + 2 * 0.6 = 1.4
    assert joint.tolist() == [0, 1, 1, 2]


def test_min_probability_above_one_restores_nothing(namer):
    image, raw = synthetic_pair(np.random.default_rng(1), 64, 64)
    every_object_dropped = np.where(raw == 255, -1, 0)  # only the outline is left
    assert len(dropped_pieces(every_object_dropped, 0)[1]) > 0
    restored, _ = restore_dropped(image, every_object_dropped, 0, namer, 1.01)
    assert (restored < 0).all()


def test_the_namer_averages_its_members_probabilities():
    torch.manual_seed(0)
    namer = RegionNamer(5, hidden=8, members=3).eval()
    x = torch.randn(4, num_features(5))
    p = namer(x)
    assert p.shape == (4, 5) and torch.allclose(p.sum(1), torch.ones(4))
    assert torch.allclose(p, torch.stack([namer.logits(x, m).softmax(-1) for m in range(3)]).mean(0))
