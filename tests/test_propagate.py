import pytest
import torch

from labelfix.model.propagate import jump_steps, nearest_fill, nearest_seed


def brute_force_distance(known):
    H, W = known.shape
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ky, kx = torch.nonzero(known, as_tuple=True)
    return ((ys[..., None] - ky) ** 2 + (xs[..., None] - kx) ** 2).min(-1).values


@pytest.mark.parametrize("density", [0.002, 0.02, 0.1, 0.4])
def test_nearest_seed_is_exact_on_random_seeds(density):
    g = torch.Generator().manual_seed(0)
    known = torch.rand(3, 37, 53, generator=g) < density
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


def test_jump_steps_reach_the_bound():
    assert jump_steps(500) == [256, 128, 64, 32, 16, 8, 4, 2, 1, 1]
    for bound in (1, 2, 5, 40, 129):
        steps = jump_steps(500, bound)
        assert sum(steps[:-1]) >= bound and steps[0] <= max(1, bound)


def test_bounded_search_matches_the_full_search_within_the_bound():
    # a 40 x 60 hole in a field of sparse known pixels: every pixel is within ~32 of a known one
    g = torch.Generator().manual_seed(1)
    known = torch.rand(2, 120, 160, generator=g) < 0.05
    known[:, 30:70, 40:100] = False
    true_reach = brute_force_distance(known[0]).max().sqrt().item()
    full = nearest_seed(known)
    bounded = nearest_seed(known, max_distance=true_reach + 2)
    ys, xs = torch.meshgrid(torch.arange(120), torch.arange(160), indexing="ij")
    def d(s):
        return (s[..., 0] - ys) ** 2 + (s[..., 1] - xs) ** 2
    assert torch.equal(d(full), d(bounded))
    assert len(jump_steps(160, true_reach + 2)) < len(jump_steps(160))
