import dataclasses
import json

import numpy as np
import pytest
import torch

from labelfix.bench.baselines import leave_as_background, nearest_label
from labelfix.bench.evaluate import BenchSettings, bench
from labelfix.bench.metrics import confusion, iou_per_class, mean_iou
from labelfix.errors import UsageError


def test_confusion_and_miou_by_hand():
    target = torch.tensor([[0, 0, 1, 1, 2, -1]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    c = confusion(pred, target, 4)
    assert c.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]  # void pixel excluded
    # IoU: class 0: 1/(2+2-1)=1/3; class 1: 2/(3+2-2)=2/3; class 2: 0/(1+0-0)=0; class 3 absent: not counted
    iou = iou_per_class(c)
    assert np.allclose(iou[:3], [1 / 3, 2 / 3, 0.0]) and np.isnan(iou[3])
    assert abs(mean_iou(c) - 100 * (1 / 3 + 2 / 3 + 0) / 3) < 1e-9


def test_confusion_restricted_to_region():
    target = torch.tensor([[0, 1, 1, 0]])
    pred = torch.tensor([[1, 1, 0, 0]])
    where = torch.tensor([[True, True, False, False]])
    assert confusion(pred, target, 2, where).tolist() == [[0, 1], [0, 1]]


def test_baselines_touch_only_unknown_pixels():
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    unknown = np.zeros_like(label, bool)
    unknown[0, 1:3] = True
    for filled in (nearest_label(label, unknown), leave_as_background(label, unknown, 0)):
        assert (filled[~unknown] == label[~unknown]).all()
    assert nearest_label(label, unknown)[0].tolist() == [0, 0, 1, 1]
    assert leave_as_background(label, unknown, 0)[0].tolist() == [0, 0, 0, 1]
    assert leave_as_background(label, unknown, None)[0].tolist() == [0, 2, 2, 1]  # majority known class


def test_bench_json_schema_and_same_pixels(dataset, bank, tmp_path):
    res = bench(BenchSettings(data=dataset, bank=str(bank), ratios=(0.3, 0.7), device="cpu", crf=False, batch_size=4))
    assert res.methods[:3] == ["labelfix", "nearest-label", "leave-as-background"]
    assert len(res.rows) == 2 * len(res.methods)
    totals = {}
    for row in res.rows:
        assert set(row) >= {"ratio", "method", "pa_miou", "miou", "pa_iou_per_class", "pa_confusion"}
        assert 0 <= row["pa_miou"] <= 100 and 0 <= row["miou"] <= 100
        # every method is scored on exactly the same removed pixels: same truth row sums
        totals.setdefault(row["ratio"], set()).add(tuple(np.asarray(row["pa_confusion"]).sum(1).tolist()))
    assert all(len(v) == 1 for v in totals.values())
    assert res.speed["model_images_per_s"] > 0 and res.speed["device"] == "cpu" and res.speed["batch_size"] == 4
    from dataclasses import asdict
    d = json.loads(json.dumps(asdict(res)))
    assert set(d) >= {"settings", "bank", "data", "methods", "rows", "speed", "labelfix_version"}
    assert len(d["bank"]["manifest_sha256"]) == 64


def test_bench_on_classes_without_background(tmp_path, bank):
    """A CamVid-like set with no background class: unlabelled pixels rank as background."""
    from labelfix.bank.store import load_bank
    b = load_bank(bank)
    from labelfix.inference.prepare import prepare
    img = np.zeros((64, 64, 3), np.uint8)
    lab = np.full((64, 64), 2)
    lab[:, :20] = -1
    b.manifest = b.manifest.updated(classes=dataclasses.replace(b.classes, background_index=None))
    mi, _ = prepare(img, lab, b, ratio=0.25, policy="replace")
    # the removed patches are the unlabelled ones on the left
    assert mi.removed_full[:, :16].all() and not mi.removed_full[:, 24:].any()


def test_skip_leaves_out_the_first_labels(dataset, bank):
    def images(**kw):
        return bench(BenchSettings(data=dataset, bank=str(bank), ratios=(0.5,), device="cpu", crf=False,
                                   speed=False, **kw)).data["images"]
    assert images() == 6 and images(skip=2) == 4 and images(skip=2, limit=3) == 3
    with pytest.raises(UsageError, match="--skip"):
        images(skip=-1)
