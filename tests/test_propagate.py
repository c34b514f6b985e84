import torch

from labelfix.propagate import nearest_fill, nearest_seed


def brute_force_distance(known):
    H, W = known.shape
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ky, kx = torch.nonzero(known, as_tuple=True)
    return ((ys[..., None] - ky) ** 2 + (xs[..., None] - kx) ** 2).min(-1).values


def test_nearest_seed_is_exact_on_random_seeds():
    g = torch.Generator().manual_seed(0)
    known = torch.rand(3, 37, 53, generator=g) < 0.02
    known[:, 0, 0] = True
    seed = nearest_seed(known)
    ys, xs = torch.meshgrid(torch.arange(37), torch.arange(53), indexing="ij")
    for b in range(3):
        d = (seed[b, ..., 0] - ys) ** 2 + (seed[b, ..., 1] - xs) ** 2
        assert torch.equal(d, brute_force_distance(known[b]))


def test_nearest_fill_keeps_known_and_fills_halves():
    lab = torch.full((1, 4, 6), -1)
    lab[0, :, 0] = 1
    lab[0, :, 5] = 2
    out = nearest_fill(lab)
    assert out[0, :, :3].eq(1).all() and out[0, :, 3:].eq(2).all()


def test_nothing_known_gives_fallback():
    assert nearest_fill(torch.full((1, 3, 3), -1), fallback=7).eq(7).all()
