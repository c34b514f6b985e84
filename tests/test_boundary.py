import json
import shutil

import numpy as np
import pytest
import torch

from labelfix.bank.store import load_bank
from labelfix.inference.correction import Correction
from labelfix.inference.finish import finish_labels
from labelfix.model.refiner import (
    CENTRE,
    CHANNELS,
    OFFSETS,
    BoundaryRefiner,
    band,
    pixel_features,
    scale_for,
    train_refiner,
)
from labelfix.policy import REFINER_MIN_GAIN, REFINER_SECOND_MIN_GAIN


def test_the_band_lies_along_decided_boundaries_inside_the_hole():
    decided = np.zeros((20, 20), np.int64)
    decided[:, 10:] = 2
    deciding = np.zeros((20, 20), bool)
    deciding[5:15] = True
    b = band(decided, deciding, background=0, radius=2)
    ys, xs = np.nonzero(b)
    assert set(ys) == set(range(5, 15))            # only where deciding
    assert set(xs) == set(range(8, 12))            # 2 px either side of the line
    assert not band(np.zeros((20, 20), np.int64), deciding, 0, 2).any()  # no object decided: no boundary


def test_the_band_is_every_deciding_pixel_near_both_kinds_of_decision():
    rng = np.random.default_rng(0)
    for radius in (1, 2, 4):
        decided = rng.choice([0, 0, 0, 5, 7], size=(37, 41))
        deciding = np.zeros(decided.shape, bool)
        deciding[4:30, 9:33] = rng.random((26, 24)) < 0.7
        def near(m):
            return torch.nn.functional.max_pool2d(torch.from_numpy(m)[None, None].float(), 2 * radius + 1,
                                                  1, radius)[0, 0].numpy() > 0
        expected = near(deciding & (decided == 0)) & near(deciding & (decided != 0)) & deciding
        assert np.array_equal(band(decided, deciding, 0, radius), expected)


def test_features_read_the_window_and_the_known_labels():
    H, W = 16, 16
    image = np.full((H, W, 3), 115, np.uint8)      # (115 / 255 - 0.45) / 0.25 = 0
    label = np.zeros((H, W), np.int64)
    label[:, 8:] = 3
    label[0] = -1                                  # void, outside the hole
    deciding = np.zeros((H, W), bool)
    deciding[6:10, 6:10] = True
    p_background = np.full((H, W), 0.8, np.float32)
    decided = label.copy()
    x = pixel_features(image, label, deciding, p_background, decided, 0, np.array([7, 1]), np.array([7, 2]))
    assert x.shape == (2, len(OFFSETS) * CHANNELS)
    per_point = x.view(2, len(OFFSETS), CHANNELS)  # bytes
    assert per_point[0, CENTRE].tolist() == [115, 115, 115, 1, 0, 0, 204, 255]  # deciding: p and decision
    right = per_point[0, OFFSETS.index((0, 3))]    # (7, 10): a known object
    assert right[3:].tolist() == [0, 0, 1, 0, 0]
    up = per_point[1, OFFSETS.index((-1, 0))]      # (0, 2): void, neither known nor deciding
    assert up[3:].tolist() == [0, 0, 0, 128, 128]
    outside = per_point[1, OFFSETS.index((-6, -6))]  # outside the label: black, and like void
    assert outside.tolist() == [0, 0, 0, 0, 0, 0, 128, 128]
    assert scale_for((256, 200)) == 1 and scale_for((375, 500)) == 2
    # arrays that run backwards (a flipped view) read the same as their copies
    flipped = pixel_features(image[:, ::-1], label[:, ::-1], deciding[:, ::-1], p_background, decided[:, ::-1], 0,
                             np.array([7, 1]), np.array([8, 13]))
    copied = pixel_features(image[:, ::-1].copy(), label[:, ::-1].copy(), deciding[:, ::-1].copy(), p_background,
                            decided[:, ::-1].copy(), 0, np.array([7, 1]), np.array([8, 13]))
    assert torch.equal(flipped, copied)


def test_a_refiner_that_learned_nothing_keeps_the_decision():
    refiner = BoundaryRefiner()
    torch.nn.init.zeros_(refiner.net[-1].weight)
    torch.nn.init.zeros_(refiner.net[-1].bias)
    x = torch.zeros(2, len(OFFSETS) * CHANNELS)
    x[:, CENTRE * CHANNELS + 6] = torch.tensor([115.0, 140.0])  # the model is unsure either way
    x[:, CENTRE * CHANNELS + 7] = torch.tensor([255.0, 0.0])    # decided background, then an object
    assert (refiner(x) > 0).tolist() == [True, False]


def test_the_bf16_refiner_decides_as_the_fp32_one():
    torch.manual_seed(0)
    refiner = BoundaryRefiner()
    x = torch.randint(0, 256, (2000, len(OFFSETS) * CHANNELS), dtype=torch.uint8)
    with torch.no_grad():
        exact, fast = refiner(x), refiner.in_bf16()(x)
    assert refiner.bf16 is False and fast.dtype == torch.float32
    assert torch.allclose(exact, refiner(x.float()))  # bytes as uint8 or as float
    assert ((exact > 0) == (fast > 0)).float().mean() > 0.99
    assert (exact - fast).abs().max() < 0.05 * exact.abs().max()


def test_training_learns_what_the_decision_got_wrong():
    # the truth follows the image's red channel at the centre; the decision is right only 70% of the time
    gen = torch.Generator().manual_seed(0)
    n = 2000
    x = torch.zeros(n, len(OFFSETS) * CHANNELS)
    truth = (torch.rand(n, generator=gen) < 0.5).float()
    x[:, CENTRE * CHANNELS] = 128 + 60 * (2 * truth - 1) + 20 * torch.randn(n, generator=gen)
    wrong = torch.rand(n, generator=gen) < 0.3
    x[:, CENTRE * CHANNELS + 7] = 255 * torch.where(wrong, 1 - truth, truth)
    x[:, CENTRE * CHANNELS + 6] = 128
    model = train_refiner(x, truth, epochs=8, batch_size=64)
    with torch.no_grad():
        accuracy = ((model(x) > 0).float() == truth).float().mean()
    assert accuracy > 0.85  # the decision alone: 0.7


def _stripes():
    """A label half background, half class 2, with a hole across the line and an image that agrees."""
    H, W = 24, 24
    label = np.zeros((H, W), np.int64)
    label[:, 12:] = 2
    image = np.where(label[..., None] == 2, 200, 30).astype(np.uint8).repeat(3, 2)
    hole = np.zeros((H, W), bool)
    hole[6:18, 4:20] = True
    return image, label, hole


class AllBackground(torch.nn.Module):
    """A refiner that calls every band pixel background, and remembers how many it was shown."""
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(len(x))
        return torch.ones(len(x))


def test_finish_labels_refines_only_the_band_and_collects_its_inputs():
    image, label, hole = _stripes()
    damaged = np.where(hole, -1, label)
    logits = torch.zeros(3, 6, 6)
    logits[2, :, 3:] = 4.0                         # the model draws the line where it is
    plain = Correction(logits, prior_weight=0.0, reach=3.0, background=0)
    inputs = []
    before, _ = finish_labels(plain, damaged, hole, hole, image, band_inputs=inputs)
    (ys, xs, x), = inputs                          # what a first pass reads
    assert x.shape == (len(ys), len(OFFSETS) * CHANNELS)
    in_band = np.zeros(hole.shape, bool)
    in_band[ys, xs] = True
    assert in_band.any() and not (in_band & ~hole).any()

    refined = Correction(logits, prior_weight=0.0, reach=3.0, background=0, refiners=(AllBackground(),))
    after, conf = finish_labels(refined, damaged, hole, hole, image)
    assert (after[in_band] == 0).all()                               # the refiner's word in the band
    assert np.array_equal(after[~in_band], before[~in_band])         # nothing else moves
    assert np.array_equal(after[~hole], label[~hole])
    assert ((conf >= 0) & (conf <= 1)).all()


def test_each_refiner_pass_reads_the_band_the_one_before_left():
    image, label, hole = _stripes()
    damaged = np.where(hole, -1, label)
    logits = torch.zeros(3, 6, 6)
    logits[2, :, 3:] = 4.0
    first, second = AllBackground(), AllBackground()
    one = Correction(logits, prior_weight=0.0, reach=3.0, background=0, refiners=(first,))
    inputs = []
    after_one, _ = finish_labels(one, damaged, hole, hole, image, band_inputs=inputs)
    (ys, xs, _), = inputs                          # what a second pass would read: the moved line's band
    assert np.array_equal(band(after_one, hole, 0, 2), np.isin(np.arange(hole.size), ys * hole.shape[1] + xs)
                          .reshape(hole.shape))
    two = Correction(logits, prior_weight=0.0, reach=3.0, background=0, refiners=(first, second))
    after_two, _ = finish_labels(two, damaged, hole, hole, image)
    assert second.seen == [len(ys)]                # the second pass read that band
    assert (after_two[hole] <= after_one[hole]).all() and not np.array_equal(after_two, after_one)


def test_a_bank_applies_its_refiner_only_in_the_modes_it_helps(bank, tmp_path):
    b = load_bank(bank)
    entry = b.manifest.refiner
    assert entry["samples"] > 0 and set(entry["scores"]) <= {"missing", "replace", "blind"}
    for mode, scores in entry["scores"].items():
        assert (mode in entry["modes"]) == (scores["with"] >= scores["without"] + REFINER_MIN_GAIN)
    copy = tmp_path / "bank"
    shutil.copytree(bank, copy, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    man = json.loads((copy / "manifest.json").read_text())
    man["refiner"]["modes"] = ["missing"]
    (copy / "manifest.json").write_text(json.dumps(man))
    b = load_bank(copy)
    (first,) = b.refiners("missing")
    assert isinstance(first, BoundaryRefiner) and b.refiners("blind") == ()
    (fast,) = b.refiners("missing", bf16=True)
    assert fast.bf16 and b.refiners("missing", bf16=True) == (fast,) and not first.bf16
    del man["refiner"]
    (copy / "manifest.json").write_text(json.dumps(man))
    assert load_bank(copy).refiners("missing") == ()  # an older bank: repair goes without it


@pytest.mark.slow
def test_the_second_pass_is_fitted_where_the_first_applies_and_applies_after_it(bank, dataset, tmp_path):
    from labelfix.data import open_dataset
    from labelfix.train.finish import fit_refiner

    man = json.loads((bank / "manifest.json").read_text())
    assert not man["refiner"]["modes"] and "refiner_second" not in man  # the first applies nowhere: no second
    copy = tmp_path / "bank"
    shutil.copytree(bank, copy, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    ds = open_dataset(dataset)
    skipped = fit_refiner(copy, ds.pairs("train"), ds.pairs("val"), second=True)
    assert skipped["skipped"] == "the first pass applies in no mode" and skipped["samples"] == 0
    man["refiner"]["modes"] = ["missing", "replace"]
    (copy / "manifest.json").write_text(json.dumps(man))
    done = fit_refiner(copy, ds.pairs("train"), ds.pairs("val"), second=True)
    second = json.loads((copy / "manifest.json").read_text())["refiner_second"]
    assert done["samples"] == second["samples"] > 0 and (copy / second["file"]).exists()
    assert set(second["scores"]) == {"missing", "replace"}  # measured where the first applies
    for mode, scores in second["scores"].items():
        assert (mode in second["modes"]) == (scores["with"] >= scores["without"] + REFINER_SECOND_MIN_GAIN)

    second["modes"] = ["missing", "blind"]
    man["refiner_second"] = second
    (copy / "manifest.json").write_text(json.dumps(man))
    b = load_bank(copy)
    first, then = b.refiners("missing")
    assert isinstance(then, BoundaryRefiner) and then is not first
    assert b.refiners("replace") == (first,) and b.refiners("blind") == ()  # never without the first
    fit_refiner(copy, ds.pairs("train"), ds.pairs("val"))  # a new first pass: the old second goes
    assert "refiner_second" not in json.loads((copy / "manifest.json").read_text())
    man = json.loads((copy / "manifest.json").read_text())
    man["refiner_second"] = second
    (copy / "manifest.json").write_text(json.dumps(man))
    (copy / "refiner-second.safetensors").write_bytes(b"damaged")
    with pytest.raises(Exception, match="refiner-second.safetensors: sha256 does not match"):
        load_bank(copy)


def test_a_damaged_refiner_file_is_named(bank, tmp_path):
    copy = tmp_path / "bank"
    shutil.copytree(bank, copy, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    f = copy / "refiner.safetensors"
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(Exception, match="refiner.safetensors: sha256 does not match"):
        load_bank(copy)
