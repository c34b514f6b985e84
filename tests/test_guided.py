import torch
import torch.nn.functional as F

from labelfix.inference.guided import box_mean, guided_probabilities, pixel_grid, sample_at


def test_box_mean_matches_a_direct_window_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 9, 13, generator=g)
    r = 2
    out = box_mean(x, r)
    for y in (0, 4, 8):
        for xx in (0, 6, 12):
            win = x[:, max(0, y - r):y + r + 1, max(0, xx - r):xx + r + 1]
            assert torch.allclose(out[:, y, xx], win.mean((1, 2)), atol=1e-6)


def test_filter_of_an_image_channel_is_nearly_the_identity():
    # p equal to a colour channel is exactly linear in the image: the filter keeps it
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 20, 24, generator=g)
    everywhere = torch.ones(20, 24, dtype=torch.bool)
    out = guided_probabilities(img, img[1:2], everywhere, radius=0.15, eps=1e-6, work_side=24)
    assert torch.allclose(out.view(20, 24), img[1], atol=1e-2)


def test_boundary_in_a_hole_snaps_to_the_colour_edge():
    # dark up to x = 40, bright after; the guess in the hole puts the class boundary at x = 34, a few
    # pixels off (within the filter's window); the filter moves it towards the colour edge
    H, W = 32, 64
    img = torch.zeros(3, H, W)
    img[:, :, 40:] = 1.0
    maps = torch.zeros(2, H, W)
    maps[0, :, :34] = 1.0   # the guess: class 0 up to x = 34, class 1 after
    maps[1, :, 34:] = 1.0
    where = torch.zeros(H, W, dtype=torch.bool)
    where[:, 8:56] = True
    out = guided_probabilities(img, maps, where, radius=0.15, eps=1e-4, work_side=64).view(2, H, -1)
    chosen = out.argmax(0)[H // 2]  # along one row of the hole (x = 8 .. 55)
    xs = torch.arange(8, 56)
    truth = (xs >= 40).long()
    guess = (xs >= 34).long()
    assert (chosen != truth).sum() < (guess != truth).sum()
    assert (chosen[xs < 30] == 0).all() and (chosen[xs >= 40] == 1).all()  # and breaks nothing


def test_sampling_at_a_pixel_grid_equals_full_bilinear_upsampling_at_those_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 14, 14, generator=g)
    where = torch.rand(75, 100, generator=g) < 0.3
    full = F.interpolate(logits[None], size=(75, 100), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(sample_at(logits, pixel_grid(where)), full[:, where], atol=1e-5)
