import pytest
import torch

from labelfix.model.masking import (
    STRATEGIES,
    background_first_mask,
    background_pixels,
    expand_mask,
    hole_patches,
    label_first_mask,
    mixed_mask,
    num_removed,
    patch_mean,
    patches_touching,
    random_mask,
    strategy_mask,
)


def fractions():
    return torch.tensor([[0.0, 1.0, 0.5, 0.25, 0.75, 0.9, 0.1, 0.6]])


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_removes_the_asked_share(strategy, ratio):
    m = strategy_mask(strategy, fractions().repeat(3, 1), ratio, torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool and m.shape == (3, 8)
    assert (m.sum(1) == num_removed(8, ratio)).all()


def test_background_first_removes_most_background():
    m = background_first_mask(fractions(), 0.5)
    assert m[0].nonzero().flatten().tolist() == [1, 4, 5, 7]  # fractions 1.0, 0.75, 0.9, 0.6


def test_label_first_removes_most_object_pixels():
    m = label_first_mask(fractions(), 0.25)
    assert m[0].nonzero().flatten().tolist() == [0, 6]  # fractions 0.0, 0.1


def test_ties_break_by_patch_order_without_generator():
    m = background_first_mask(torch.ones(1, 6), 0.5)
    assert m[0].nonzero().flatten().tolist() == [0, 1, 2]


def test_seeded_masks_are_deterministic_and_seeds_differ():
    a = random_mask(4, 64, 0.5, torch.Generator().manual_seed(1))
    b = random_mask(4, 64, 0.5, torch.Generator().manual_seed(1))
    c = random_mask(4, 64, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mixed_mask_follows_the_1_2_2_mix():
    # real fractions are multiples of 1/(p*p); here p = 4
    f = torch.randint(0, 17, (3000, 16), generator=torch.Generator().manual_seed(0)).float() / 16
    m, choice = mixed_mask(f, 0.5, torch.Generator().manual_seed(0))
    share = torch.bincount(choice, minlength=3).float() / 3000
    assert torch.allclose(share, torch.tensor([0.2, 0.4, 0.4]), atol=0.04)
    # each sample's mask is the one of its strategy
    # each background-first sample removes the 8 patches of highest fraction (ties in any order)
    sel = m[choice == 2]
    fs = f[choice == 2]
    kth = fs.sort(1, descending=True).values[:, 7:8]
    assert (fs[sel].view(-1, 8) >= kth).all()


def test_patch_mean_and_touching():
    pix = torch.zeros(1, 8, 8, dtype=torch.bool)
    pix[0, 0, 0] = True  # one pixel in patch 0
    pix[0, 4:, 4:] = True  # all of patch 3
    assert patch_mean(pix, 4)[0].tolist() == [1 / 16, 0.0, 0.0, 1.0]
    assert patches_touching(pix, 4)[0].tolist() == [True, False, False, True]


def test_background_pixels_counts_unlabelled():
    lab = torch.tensor([[[0, 1, -1, 2]]])
    assert background_pixels(lab, 0).tolist() == [[[True, False, True, False]]]
    assert background_pixels(lab, None).tolist() == [[[False, False, True, False]]]


def test_expand_mask():
    m = torch.tensor([[True, False, False, True]])
    px = expand_mask(m, 2, 3)
    assert px.shape == (1, 6, 6) and px[0, :3, :3].all() and not px[0, :3, 3:].any() and px[0, 3:, 3:].all()


def test_hole_patches_skip_thin_lines_but_not_holes():
    missing = torch.zeros(2, 32, 32, dtype=torch.bool)
    missing[:, 20, :] = True  # a one-pixel line across both labels (an outline)
    missing[0, 2:10, 2:10] = True  # a hole in the first: patch (0, 0) and its neighbours at p = 8
    removed = hole_patches(missing, 8)  # (2, 16)
    assert removed[0].nonzero().flatten().tolist() == [0, 1, 4, 5]  # the hole's patches, not the line's
    assert removed[1].tolist() == patches_touching(missing[1:], 8)[0].tolist()  # thin only: the line's patches
    assert not hole_patches(torch.zeros(1, 32, 32, dtype=torch.bool), 8).any()
