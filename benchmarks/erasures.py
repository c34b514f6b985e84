"""How well blind repair's outline evidence (labelfix/erasure.py) tells damage from real outlines.

Erased blocks (find_erasures):
On every label of a VOC-layout dataset (train and val), at its own size and brought to --side:
  clean          the label as it is: every pixel marked is a false alarm
  no outlines    the ignore-value outline filled with the nearest class (labels drawn without outlines):
                 false alarms again, since there a straight edge is no evidence
  blocks set to 0  repair_quality.py's zero-blocks damage: the share of erased object pixels found,
                 and the pixels marked outside the blocks
Objects relabelled to background (orphaned_outline, which sends a label to review): the share of clean
labels flagged, and of labels with about half of their classes set to background (repair_quality.py's
dropped-objects damage).

    python benchmarks/erasures.py --data path/to/voc2012 [--side 500] [--limit N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image
from repair_quality import IGNORE, blocks, drop_objects

from labelfix.bench.baselines import nearest_label
from labelfix.data import open_dataset, read_label
from labelfix.policy import REVIEW_ORPHANED
from labelfix.repair.erasure import find_erasures, orphaned_outline


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--side", type=int, default=500)
    ap.add_argument("--limit", type=int, default=None, help="labels per split")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    ds = open_dataset(a.data)
    bg = ds.classes.background_index
    rng = np.random.default_rng(a.seed)
    n = 0
    pixels = {"clean": 0, "no outlines": 0}
    labels_hit = {"clean": 0, "no outlines": 0}
    total = erased_obj = found_obj = found_outside = 0
    seconds = []
    review = {"clean": [], "dropped": []}
    for split in ("train", "val"):
        for _, path in ds.pairs(split)[: a.limit]:
            native = read_label(path).values
            h, w = native.shape
            size = (round(w * a.side / max(h, w)), round(h * a.side / max(h, w)))
            for values in (native, np.array(Image.fromarray(native).resize(size, Image.NEAREST))):
                label = np.where(values == IGNORE, -1, values.astype(np.int64))
                outline_free = nearest_label(label, label < 0)
                for case, lab in (("clean", label), ("no outlines", outline_free)):
                    t0 = time.perf_counter()
                    found = find_erasures(lab, bg)
                    seconds.append(time.perf_counter() - t0)
                    pixels[case] += int(found.sum())
                    labels_hit[case] += bool(found.any())
                block = blocks(label.shape, rng)
                found = find_erasures(np.where(block, bg, label), bg)
                obj = block & (label >= 0) & (label != bg)
                erased_obj += int(obj.sum())
                found_obj += int((found & obj).sum())
                found_outside += int((found & ~block).sum())
                total += label.size
                review["clean"].append(orphaned_outline(label, bg) >= REVIEW_ORPHANED)
                dropped = drop_objects(values, rng)
                if dropped.any():
                    review["dropped"].append(orphaned_outline(np.where(dropped, bg, label), bg) >= REVIEW_ORPHANED)
                n += 1
    print(f"{n} labels ({n // 2} at their own size, the same at {a.side} px)")
    for case in pixels:
        print(f"  {case:12s} marked {pixels[case]} pixels ({100 * pixels[case] / total:.4f}%) "
              f"in {labels_hit[case]} labels")
    print(f"  blocks set to 0: found {100 * found_obj / max(erased_obj, 1):.1f}% of the erased object pixels; "
          f"marked {100 * found_outside / total:.2f}% of all pixels outside the blocks "
          "(real background past a block's far side, which repair's model keeps)")
    print(f"  {1000 * np.median(seconds):.2f} ms a label (median)")
    print(f"orphaned outline >= {REVIEW_ORPHANED} (review): {100 * np.mean(review['clean']):.1f}% of clean labels, "
          f"{100 * np.mean(review['dropped']):.1f}% of {len(review['dropped'])} labels with objects set to background")


if __name__ == "__main__":
    main()
