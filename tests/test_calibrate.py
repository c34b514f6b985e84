import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from labelfix.bank.manifest import Finishing
from labelfix.bench.baselines import nearest_label
from labelfix.policy import BLIND_CHANGE_LIMIT
from labelfix.repair.run import repair
from labelfix.repair.settings import RepairSettings
from labelfix.train.calibrate import MODES, WEIGHTS, setting_name


def test_training_measures_a_weight_per_mode(bank):
    man = json.loads((bank / "manifest.json").read_text())
    assert set(man["correction_weight"]) == set(MODES)
    assert all(w in WEIGHTS for w in man["correction_weight"].values())
    assert set(man["guided_filter"]) == set(MODES)
    for key in ("colour_weight", "guided_radius", "background_bias", "extent_scale"):
        assert set(man[key]) == set(MODES)
    scores = man["calibration"]["scores"]
    changed = man["calibration"]["blind_undamaged_changed_pct"]
    assert changed["limit"] == BLIND_CHANGE_LIMIT

    def qualifies(mode, setting):
        return mode != "blind" or setting == "0.0" or max(changed["blocks, objects"][setting]) <= BLIND_CHANGE_LIMIT

    for mode, w in man["correction_weight"].items():
        chosen = setting_name(Finishing(w, man["guided_filter"][mode], man["colour_weight"][mode],
                                        man["guided_radius"][mode], man["background_bias"][mode],
                                        man["extent_scale"][mode]))
        assert qualifies(mode, chosen)
        assert scores[mode][chosen] == max(v for k, v in scores[mode].items() if qualifies(mode, k))


@pytest.mark.slow
def test_blind_settings_that_change_too_many_undamaged_pixels_are_passed_over(bank, dataset, tmp_path, monkeypatch):
    import labelfix.train.calibrate as cal
    from labelfix.data import open_dataset

    b = tmp_path / "bank"
    shutil.copytree(bank, b, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    monkeypatch.setattr(cal, "BLIND_CHANGE_LIMIT", -1.0)  # nothing qualifies: blind falls back to weight 0
    cal.calibrate_bank(b, open_dataset(dataset).pairs("val")[:2])
    assert json.loads((b / "manifest.json").read_text())["correction_weight"]["blind"] == 0.0


def test_weight_zero_falls_back_to_nearest_fill(bank, dataset, tmp_path):
    b = tmp_path / "bank"
    shutil.copytree(bank, b, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    man = json.loads((b / "manifest.json").read_text())
    man["correction_weight"] = {"missing": 0.0, "replace": 1.0, "blind": 1.0}
    man["guided_filter"] = {"missing": False, "replace": False, "blind": False}
    man["colour_weight"] = {"missing": 0.0, "replace": 0.0, "blind": 0.0}
    (b / "manifest.json").write_text(json.dumps(man))
    labels, images = tmp_path / "l", tmp_path / "i"
    labels.mkdir()
    images.mkdir()
    for stem in (dataset / "splits" / "val.txt").read_text().split()[:3]:
        shutil.copy(dataset / "labels" / f"{stem}.png", labels)
        shutil.copy(dataset / "images" / f"{stem}.jpg", images)
    res = repair(RepairSettings(labels=labels, images=images, bank=str(b), missing=(255,), device="cpu",
                                classes="bank"))
    for row in res.rows:
        old = np.array(Image.open(labels / row.file)).astype(np.int64)
        unknown = old == 255
        expected = nearest_label(np.where(unknown, -1, old), unknown)
        assert (np.array(Image.open(res.out / row.file)) == expected).all()


@pytest.mark.slow
def test_bank_without_background_class_keeps_blind_weight_and_valid_json(bank, dataset, tmp_path):
    from labelfix.data import open_dataset
    from labelfix.train.calibrate import calibrate_bank

    b = tmp_path / "bank"
    shutil.copytree(bank, b, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    man = json.loads((b / "manifest.json").read_text())
    man["classes"]["background_index"] = None
    (b / "manifest.json").write_text(json.dumps(man))
    scores = calibrate_bank(b, open_dataset(dataset).pairs("val")[:2])
    assert "blind" not in scores and set(scores) == {"missing", "replace"}

    def no_nan(token):
        raise AssertionError(f"manifest holds {token}")
    man = json.loads((b / "manifest.json").read_text(), parse_constant=no_nan)
    assert "blind" not in man["correction_weight"]


def test_replace_averages_its_ratios_and_the_other_modes_pool_their_cases():
    from labelfix.bench.metrics import mean_iou
    from labelfix.train.calibrate import _mode_score

    big = torch.tensor([[900, 100], [100, 900]])  # a case with many pixels, mIoU 81.8
    small = torch.tensor([[10, 0], [0, 10]])       # a perfect case with few
    empty = torch.zeros(2, 2, dtype=torch.long)     # nothing removed: not a case
    assert _mode_score([big, small, empty], "replace") == pytest.approx((mean_iou(big) + 100.0) / 2)
    assert _mode_score([big, small], "missing") == pytest.approx(mean_iou(big + small))
    assert _mode_score([empty], "blind") is None
