import json
import shutil

import numpy as np
import pytest
import torch

from labelfix.bank.manifest import Finishing
from labelfix.bank.store import load_bank
from labelfix.inference.correction import Correction
from labelfix.inference.prepare import prepare
from labelfix.inference.run import run_model
from labelfix.model.extent import FEATURES, extent_features, hole_samples, hole_size, output_features, train_extent
from labelfix.model.propagate import nearest_fill


def small_case():
    # 8 x 8: class 2 in the top-left 2 x 2, background elsewhere; the right half unknown
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, :2, :2] = 2
    label[0, :, 4:] = -1
    nearest, distance = nearest_fill(label, with_distance=True, mend=False)
    logits = torch.zeros(1, 3, 8, 8)
    return label, nearest, distance, logits


def test_features_read_distances_and_the_labels_background_shares():
    label, nearest, distance, logits = small_case()
    x = extent_features(label, nearest, distance, logits, background=0)
    assert x.shape == (1, 8, 8, FEATURES)
    assert (x[0, :, :4, 0] == 0).all()  # known pixels are at distance 0 from a known one
    assert x[0, 4, 7, 0] == pytest.approx(4 / 8)  # 4 pixels from the known column 3, in shares of the side
    assert 3 / 8 <= x[0, 0, 4, 2] <= 5 / 8  # 3 from (0, 4) to the object at (0, 1), searched on a coarser grid
    assert x[0, 7, 7, 3] == 1 and x[0, 0, 4, 3] == 1  # nearest known label is background (row 0 col 3 is bg)
    assert x[0, 0, 0, 5] == pytest.approx(28 / 32)  # 28 of the 32 known pixels are background
    assert x[0, 0, 0, 6] == 1.0  # the hole's rim (column 3) is all background
    assert (x[0, ..., 4] == 0).all()  # equal logits: log p(bg) equals the best other
    assert (x[0, :, 4:, 7] == 0.5).all() and (x[0, :, :4, 7] == 0).all()  # the hole is half the grid


def test_hole_size_is_per_piece():
    hole = torch.zeros(1, 4, 4, dtype=torch.bool)
    hole[0, 0, :2] = True  # a piece of 2
    hole[0, 2:, 2:] = True  # a piece of 4
    size = hole_size(hole)[0]
    assert size[0, 0] == size[0, 1] == 2 / 16 and size[3, 3] == 4 / 16 and size[1, 1] == 0


def test_output_features_add_the_prior_back():
    label, nearest, distance, logits = small_case()
    logits[:, 1] = 2.0
    _, with_prior = output_features(label, nearest, distance, logits, 2.5, background=0, share=0.5)
    assert with_prior[0, 2, 0, 0] == 2.5 and with_prior[0, 0, 0, 0] == 0  # class 2 known at (0, 0)
    assert with_prior[0, 0, 7, 7] == 2.5  # background is nearest there
    assert (with_prior[0, 1] == 1.0).all()  # half the model's correction


def test_the_bias_learns_how_far_objects_reach():
    # the logits favour class 1 by 2 everywhere; the truth is background where feature 0 (distance) is
    # large and class 1 where it is small: the bias must be large far away and small close by
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40000, FEATURES, generator=g)
    logits = torch.zeros(40000, 2)
    logits[:, 1] = 2.0
    truth = (x[:, 0] < 0.5).long()
    model = train_extent(x, logits, truth, background=0, epochs=15)
    far, near = x.clone(), x.clone()
    far[:, 0], near[:, 0] = 0.9, 0.1
    with torch.no_grad():
        assert model(far).mean() > 2.5 and model(near).mean() < 1.5


def test_hole_samples_draw_only_unknown_labelled_pixels():
    label, nearest, distance, logits = small_case()
    x, with_prior = output_features(label, nearest, distance, logits, 1.0, background=0, share=1.0)
    truth = torch.zeros(8, 8, dtype=torch.long)
    truth[:, 6:] = -1  # void
    fx, fl, ft = hole_samples(x[0], with_prior[0], truth, label[0] < 0, np.random.default_rng(0), per_label=100)
    assert len(ft) == 16 and (ft == 0).all()  # columns 4 and 5 only
    assert fx.shape == (16, FEATURES) and fl.shape == (16, 3)
    assert len(hole_samples(x[0], with_prior[0], truth, label[0] < 0, np.random.default_rng(0), per_label=5)[2]) == 5


def test_the_bias_goes_to_the_background_logit_only_when_calibrated():
    extent = torch.full((4, 4), 3.0)
    plain = Correction(torch.zeros(2, 4, 4), prior_weight=1.0, reach=2.0, background=0, extent=extent)
    assert plain.final_logits() is plain.logits  # share 0: unused
    used = plain.scaled(Finishing(1.0, extent=0.5)).final_logits()
    assert used[0].eq(1.5).all() and used[1].eq(0).all()


def test_a_bank_carries_the_bias(bank, tmp_path, dataset):
    b = load_bank(bank)
    assert b.manifest.extent["samples"] > 0 and b.extent() is not None
    from labelfix.data import load_pair, open_dataset
    image, label = load_pair(*open_dataset(dataset).pairs("val")[0], b.classes)
    damaged = label.copy()
    damaged[:, label.shape[1] // 2:] = -1
    mi, _ = prepare(image, damaged, b, missing=damaged < 0)
    corr, = run_model(b, [mi], "cpu", calibrated=False)
    S = b.config.input_size
    assert corr.extent.shape == (S, S) and torch.isfinite(corr.extent).all()

    copy = tmp_path / "bank"
    shutil.copytree(bank, copy, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    man = json.loads((copy / "manifest.json").read_text())
    man["extent_scale"] = {"missing": 0.0, "replace": 0.0, "blind": 0.0}
    (copy / "manifest.json").write_text(json.dumps(man))
    assert run_model(load_bank(copy), [mi], "cpu")[0].extent is None  # no mode applies it: not computed
    man["extent_scale"]["missing"] = 1.0
    (copy / "manifest.json").write_text(json.dumps(man))
    used, = run_model(load_bank(copy), [mi], "cpu")
    assert used.extent_scale == 1.0 and not torch.equal(used.final_logits(), used.logits)
    del man["extent"]
    (copy / "manifest.json").write_text(json.dumps(man))
    # an older bank (the file's checks: test_bank.py): no learned bias, and the corrections carry none
    assert run_model(load_bank(copy), [mi], "cpu", calibrated=False)[0].extent is None
