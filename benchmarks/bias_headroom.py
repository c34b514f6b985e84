"""How much a per-label background bias could win on blocks erased to 255, and whether a label can tell.

The background bias (a constant added to the background logit, calibrate.py) trades objects for background
in every hole of a label. One constant for all labels is what calibration can choose; this script asks
how much better a choice per label would be, and whether the label itself says which.

  1. Repairs the val labels with ~30% erased in blocks (`--missing 255`, as repair_quality.py damages
     them) once per bias in --biases, the bank's own settings otherwise, and scores each constant.
  2. The oracle: the bias of each label chosen with its true labels to maximise the dataset mIoU
     (coordinate ascent over the labels): a ceiling no method reaches, since it fits noise too.
  3. Self-calibration: more blocks are erased from what each label still knows (--extra of the label),
     the labels are repaired once per bias again, and each label takes the bias that repaired its extra
     blocks best (pixel accuracy), unless that gains less than --margin over no bias.

    python benchmarks/bias_headroom.py --data path/to/voc2012 [--bank checkpoints/voc] [--limit N]
        [--biases=-1,-0.5,0,0.5,1,2] [--extra 0.15] [--margins 0,0.005,0.02] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from labelfix.bank.store import DEFAULT_BANK
from labelfix.bench.metrics import confusion, mean_iou
from labelfix.data import open_dataset
from labelfix.repair.run import repair
from labelfix.repair.settings import RepairSettings

sys.path.insert(0, str(Path(__file__).parent))
from repair_quality import IGNORE, blocks, damage_all, dataset_arguments, write_job  # noqa: E402


def biased_bank(bank: Path, bias: float, folder: Path) -> Path:
    """A copy of the bank whose --missing mode adds `bias` to the background logit."""
    copy = folder / f"bank{bias:+g}"
    if not copy.exists():
        shutil.copytree(bank, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest.setdefault("background_bias", {})["missing"] = bias
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def repair_each_bias(items, damaged, biases, bank: Path, folder: Path, name: str) -> dict[float, list[np.ndarray]]:
    """{bias: the repaired labels} for the labels `damaged(item)` of every item."""
    labels, images = write_job(items, damaged, folder / name)
    out = {}
    for b in biases:
        target = folder / name / f"out{b:+g}"
        res = repair(RepairSettings(labels=labels, images=images, out=target, bank=str(biased_bank(bank, b, folder)),
                                    missing=(IGNORE,)))
        assert res.failed == 0, [r.error for r in res.rows if r.error]
        out[b] = [np.array(Image.open(target / f"{it['stem']}.png")).astype(np.int64) for it in items]
    return out


def label_confusion(pred: np.ndarray, truth: np.ndarray, where: np.ndarray, K: int) -> torch.Tensor:
    return confusion(torch.from_numpy(pred), torch.from_numpy(np.where(truth == IGNORE, -1, truth.astype(np.int64))),
                     K, torch.from_numpy(where))


def oracle(confs: dict[float, list[torch.Tensor]], start: float, sweeps: int = 3) -> float:
    """The dataset mIoU with each label's bias chosen with its truth (coordinate ascent from `start`)."""
    biases = list(confs)
    n = len(confs[start])
    choice = [start] * n
    total = sum(confs[start])
    for _ in range(sweeps):
        for i in range(n):
            rest = total - confs[choice[i]][i]
            choice[i] = max(biases, key=lambda b: (mean_iou(rest + confs[b][i]), b == choice[i]))
            total = rest + confs[choice[i]][i]
    return mean_iou(total)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dataset_arguments(ap)
    ap.add_argument("--biases", default="-1,-0.5,0,0.5,1,2")
    ap.add_argument("--extra", type=float, default=0.15, help="share of the label erased again to self-calibrate")
    ap.add_argument("--margins", default="0,0.005,0.02")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    ds = open_dataset(a.data)
    K = ds.classes.num_classes
    biases = [float(x) for x in a.biases.split(",")]
    if 0.0 not in biases:
        biases.append(0.0)
    bank = Path(a.bank or DEFAULT_BANK)
    result = {"data": a.data, "bank": str(bank), "biases": biases}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = damage_all(ds.pairs(a.split)[: a.limit], a.seed)
        rng = np.random.default_rng(a.seed + 1)
        for it in items:  # more blocks, from what the label still knows
            it["extra"] = blocks(it["truth"].shape, rng, coverage=a.extra) & ~it["missing-blocks"][1]
        real = repair_each_bias(items, lambda it: it["missing-blocks"][0], biases, bank, tmp, "real")
        confs = {b: [label_confusion(real[b][i], it["truth"], it["missing-blocks"][1], K) for i, it in enumerate(items)]
                 for b in biases}
        result["constant"] = {b: round(mean_iou(sum(confs[b])), 2) for b in biases}
        print("one bias for all labels:", result["constant"], flush=True)
        result["oracle"] = round(oracle(confs, 0.0), 2)
        print(f"each label's best bias, chosen with its truth (a ceiling): {result['oracle']}", flush=True)

        again = repair_each_bias(items, lambda it: np.where(it["extra"], IGNORE, it["missing-blocks"][0]), biases,
                                 bank, tmp, "extra")
        accuracy = np.zeros((len(items), len(biases)))
        for i, it in enumerate(items):
            known = it["missing-blocks"][0].astype(np.int64)
            where = it["extra"] & (known != IGNORE)
            for j, b in enumerate(biases):
                accuracy[i, j] = (again[b][i][where] == known[where]).mean() if where.any() else 0.0
        zero = biases.index(0.0)
        result["self_calibrated"] = {}
        for m in (float(x) for x in a.margins.split(",")):
            best = accuracy.argmax(1)
            chosen = [biases[j] if accuracy[i, j] - accuracy[i, zero] > m else 0.0 for i, j in enumerate(best)]
            result["self_calibrated"][m] = round(mean_iou(sum(confs[b][i] for i, b in enumerate(chosen))), 2)
        truth_best = np.array([max(range(len(biases)), key=lambda j: float(confs[biases[j]][i].diag().sum()))
                               for i in range(len(items))])
        result["agreement"] = round(float(np.corrcoef(accuracy.argmax(1), truth_best)[0, 1]), 2)
        print(f"each label's bias chosen by its own extra blocks (by the least gain over none): "
              f"{result['self_calibrated']}; correlation of that choice with the truth's: {result['agreement']}",
              flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
