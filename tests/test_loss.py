import math

import torch

from labelfix.model.loss import class_weights, weighted_cross_entropy


def test_class_weights_match_eq10_by_hand():
    shares = torch.tensor([0.7, 0.2, 0.1])
    mean = 1 / 3
    std = math.sqrt(((0.7 - mean) ** 2 + (0.2 - mean) ** 2 + (0.1 - mean) ** 2) / 3)
    expected = [1 - 1 / (1 + 2.0 * math.exp(-(x - mean) / (std + 1e-6)) ** 0.5) for x in (0.7, 0.2, 0.1)]
    got = class_weights(shares, beta=2.0, gamma=0.5)
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)
    assert got[0] < got[1] < got[2]  # frequent classes weigh less


def test_weighted_cross_entropy_by_hand_excludes_ignore():
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])  # (1, 2 classes, 1, 3)
    target = torch.tensor([[[0, 1, -1]]])
    w = torch.tensor([0.25, 1.0])
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    l1 = -math.log(math.exp(1) / (1 + math.exp(1)))
    expected = (0.25 * l0 + 1.0 * l1) / (0.25 + 1.0)
    assert abs(weighted_cross_entropy(logits, target, w).item() - expected) < 1e-6


def test_no_counted_pixel_gives_zero_with_grad():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.full((1, 2, 2), -1), None)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None
