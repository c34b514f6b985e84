"""What `--min-confidence P` keeps, and how often what it keeps is right: the reliability of the confidence.

Val labels with ~30% erased in blocks (as repair_quality.py damages them) are repaired with `--missing 255`
once per P; with P, a pixel whose new class the bank is less than P sure of stays 255. For each P: the
share of the erased pixels filled, and the accuracy of those; and for each band between two P, the
accuracy of the pixels filled at the lower P and not at the higher one. A calibrated confidence has
each band's accuracy within the band.

    python benchmarks/confidence.py --data path/to/voc2012 [--bank checkpoints/voc] [--limit N]
        [--levels 0,0.5,0.6,0.7,0.8,0.9,0.95,0.99] [--case missing-blocks|paper-cells]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from labelfix.data import open_dataset
from labelfix.repair.run import repair
from labelfix.repair.settings import RepairSettings

sys.path.insert(0, str(Path(__file__).parent))
from repair_quality import IGNORE, damage_all, dataset_arguments, write_job  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dataset_arguments(ap)
    ap.add_argument("--levels", default="0,0.5,0.6,0.7,0.8,0.9,0.95,0.99")
    ap.add_argument("--case", default="missing-blocks", choices=("missing-blocks", "paper-cells"))
    a = ap.parse_args()
    ds = open_dataset(a.data)
    items = damage_all(ds.pairs(a.split)[: a.limit], a.seed)
    levels = sorted(float(x) for x in a.levels.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        labels, images = write_job(items, lambda it: it[a.case][0], Path(tmp))
        filled, right = [], []
        for p in levels:
            out = Path(tmp) / f"out{p}"
            repair(RepairSettings(labels=labels, images=images, out=out, bank=a.bank, missing=(IGNORE,),
                                  min_confidence=p))
            n = ok = total = 0
            for it in items:
                truth = it["truth"]
                erased = it[a.case][1] & (truth != IGNORE)
                fixed = np.array(Image.open(out / f"{it['stem']}.png"))
                kept = erased & (fixed != IGNORE)
                total += int(erased.sum())
                n += int(kept.sum())
                ok += int((kept & (fixed == truth)).sum())
            filled.append(n)
            right.append(ok)
            print(f"--min-confidence {p:<4}: {100 * n / total:5.1f}% of the erased pixels filled, "
                  f"{100 * ok / max(n, 1):5.2f}% of them right", flush=True)
        for i in range(len(levels)):
            hi = levels[i + 1] if i + 1 < len(levels) else 1.0
            n = filled[i] - (filled[i + 1] if i + 1 < len(levels) else 0)
            ok = right[i] - (right[i + 1] if i + 1 < len(levels) else 0)
            print(f"confidence {levels[i]:.2f}-{hi:.2f}: {n} pixels, {100 * ok / max(n, 1):5.1f}% right")


if __name__ == "__main__":
    main()
