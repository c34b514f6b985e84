import numpy as np
import torch

from labelfix.bank.manifest import Finishing
from labelfix.inference.colour import colour_log_likelihood
from labelfix.inference.correction import Correction
from labelfix.inference.finish import finish_labels

RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def test_a_class_is_favoured_where_a_pixel_has_its_colour():
    image = np.zeros((20, 20, 3), np.uint8)
    label = np.full((20, 20), -1)
    image[:, :10], label[:, :10] = RED, 1     # class 1 known on red
    image[:, 10:], label[:, 10:] = GREEN, 0   # class 0 known on green
    image[0, 0] = BLUE                        # a colour no known pixel has
    label[0, 0] = -1
    index = torch.tensor([1, 15, 0])          # a red, a green and the blue pixel
    ev = colour_log_likelihood(image, label, label < 0, torch.tensor([0, 1, 2]), index)  # class 2: no known pixel
    assert ev.shape == (3, 3)
    assert ev[1, 0] > 0.5 and ev[1, 1] < -0.5   # red looks like class 1, green does not
    assert ev[0, 1] > 0.5 and ev[0, 0] < -0.5
    assert ev[2].abs().max() < 1e-6              # no evidence for or against a class never seen
    assert ev[:, 2].abs().max() < 0.1            # a colour never seen speaks for no class


def test_colour_moves_a_hole_boundary_the_prior_puts_in_the_wrong_place():
    # a hole across a red-green edge at x = 12; nearest-label fill splits it at its middle, x = 16
    H, W = 16, 32
    image = np.zeros((H, W, 3), np.uint8)
    image[:, :12], image[:, 12:] = RED, GREEN
    label = np.where(np.arange(W)[None] < 12, 1, 0).repeat(H, 0)
    hidden = np.zeros((H, W), bool)
    hidden[:, 8:24] = True
    flat = torch.zeros(2, 4, 4)  # the model has no opinion
    plain = Correction(flat, prior_weight=1.0, reach=2.0)
    before, _ = finish_labels(plain, label, hidden, hidden, image)
    after, _ = finish_labels(plain.scaled(Finishing(1.0, colour=2.0)), label, hidden, hidden, image)
    assert (before[:, 12:16] == 1).all()          # the prior carries red's class past the colour edge
    assert (after[hidden] == label[hidden]).all()  # the colour evidence puts it back on the edge
