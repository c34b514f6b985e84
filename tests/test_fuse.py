import torch

from labelfix.model.fuse import one_hot, patchify, sincos_pos_embed_2d, stack_fuse, unpatchify


def test_stack_fuse_layout_and_unlabelled_pixels():
    label = torch.tensor([[[0, 2], [-1, 1]]])
    image = torch.rand(1, 3, 2, 2)
    f = stack_fuse(label, image, 3)
    assert f.shape == (1, 6, 2, 2)
    assert f[0, :3, 1, 0].sum() == 0  # unlabelled: all-zero one-hot
    assert f[0, 2, 0, 1] == 1 and f[0, 0, 0, 0] == 1 and f[0, 1, 1, 1] == 1
    assert torch.equal(f[:, 3:], image)


def test_patchify_round_trip_and_order():
    x = torch.randn(2, 5, 12, 12)
    p = patchify(x, 4)
    assert p.shape == (2, 9, 4 * 4 * 5)
    assert torch.equal(unpatchify(p, 4, 5), x)
    # patch 1 is the top row, second column; its first entry is pixel (0, 4), channel 0
    assert p[0, 1, 0] == x[0, 0, 0, 4]


def test_one_hot_sums_to_one_on_labelled():
    lab = torch.randint(-1, 4, (2, 8, 8))
    oh = one_hot(lab, 4)
    assert torch.equal(oh.sum(1), (lab >= 0).float())


def test_sincos_positions():
    e = sincos_pos_embed_2d(16, 4)
    assert e.shape == (16, 16)
    assert torch.allclose(e[0, :4], torch.tensor([0.0, 0.0, 0.0, 0.0]))  # sin(0) for position 0
    assert len({tuple(r.tolist()) for r in e}) == 16  # every position distinct
