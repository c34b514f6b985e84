"""Repair quality on labels damaged the ways real datasets are damaged (issue 4's acceptance figures).

Each val label of a VOC-layout dataset is damaged four ways, written as palette PNGs, repaired by the
library's `repair()` (the same path as the command), and scored against the original label with
dataset-level confusion matrices (void excluded):

  missing-blocks   ~30% of the image in random blocks set to 255, repaired with --missing 255 (5 to 15
                   blocks; `--block-area 0.1` makes them blocks of 10% of the image each)
  paper-cells      the 50% most-background cells of a 14 x 14 grid set to 255, --missing 255
  zero-blocks      the same blocks set to 0 (background), blind repair
  dropped-objects  about half of the objects (classes of an image) set to background, their void outline
                   kept (VOC style), blind repair
  forgotten-objects  the same objects set to background with their outline (the void pixels nearest to
                   them): an object nobody outlined, blind repair
  clean            no damage, blind repair (not run unless asked: --cases clean): what it changes that was right

For the two --missing cases, nearest-label fill and a dense CRF (if pydensecrf2 is installed) fill the
same pixels. For the blind cases, the share of undamaged pixels that repair changed is reported too
(void excluded: blind repair fills VOC's outlines), and the labels where dropped objects were named;
for every case, how many labels the report sends to review.

    python benchmarks/repair_quality.py --data path/to/voc2012 [--bank checkpoints/voc] [--skip N] [--limit N]
        [--side 500] [--errors] [--json out.json]

--skip 64 leaves out the 64 val labels that calibrated the bundled bank (strictly held out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from labelfix.bench.baselines import crf_available, dense_crf, nearest_label
from labelfix.bench.metrics import confusion, iou_per_class, mean_iou
from labelfix.data import open_dataset, read_label
from labelfix.model.propagate import nearest_fill
from labelfix.repair.run import repair
from labelfix.repair.settings import RepairSettings
from labelfix.train.damage import background_cells

IGNORE = 255


def blocks(shape, rng, coverage=0.3, area=None):
    """Random blocks until `coverage` of the label is covered: each side 12-30% of the label's (5 to 15
    blocks, 9 on most labels), or with `area`, blocks of that share of the label each (aspect 0.7-1.4)."""
    H, W = shape
    m = np.zeros(shape, bool)
    while m.mean() < (coverage if area is None else coverage - 0.01):
        if area is None:
            h, w = int(H * rng.uniform(0.12, 0.3)), int(W * rng.uniform(0.12, 0.3))
        else:
            h = min(H, int(round(np.sqrt(area * H * W * rng.uniform(0.7, 1.4)))))
            w = min(W, int(round(area * H * W / max(h, 1))))
        y, x = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
        m[y:y + h, x:x + w] = True
    return m


def paper_cells(label, grid=14, ratio=0.5):
    """The `ratio` most-background cells of a grid x grid partition (background = class 0 or void)."""
    return background_cells(np.where(label == IGNORE, -1, label.astype(np.int64)), 0, grid, ratio)


def drop_objects(label, rng):
    present = [c for c in np.unique(label) if c not in (0, IGNORE)]
    keep_one = rng.random() < 0.5
    dropped = np.zeros(label.shape, bool)
    chosen = [c for c in present if rng.random() < 0.5]
    if not chosen and present and not keep_one:
        chosen = [present[rng.integers(len(present))]]
    for c in chosen:
        dropped |= label == c
    return dropped


def with_outline(label, dropped, reach=8):
    """The dropped pixels and their void outline: the void pixels within `reach` px whose nearest object
    pixel (background aside) is a dropped one."""
    objects = (label != IGNORE) & (label != 0)
    known = np.where(objects, dropped.astype(np.int64), -1)
    nearest, distance = nearest_fill(torch.from_numpy(known)[None], with_distance=True)
    outline = (label == IGNORE) & (nearest[0].numpy() == 1) & (distance[0].numpy() <= reach)
    return dropped | outline


def damage_all(pairs, seed, side=None, folder=None, block_area=None):
    """The four damaged versions of every label. With `side`, image and label are first brought to that
    longer side (bicubic, nearest; the images written to `folder`), e.g. 500 for VOC's original size;
    with `block_area`, the blocks are each that share of the label (`blocks`)."""
    rng = np.random.default_rng(seed)
    out = []
    for img_path, lab_path in pairs:
        lf = read_label(lab_path)
        lab = lf.values
        if side:
            im = Image.open(img_path).convert("RGB")
            size = tuple(round(v * side / max(im.size)) for v in im.size)
            img_path = Path(folder) / img_path.name
            im.resize(size, Image.BICUBIC).save(img_path, quality=95)
            lab = np.array(Image.fromarray(lab).resize(size, Image.NEAREST))
        b = blocks(lab.shape, rng, area=block_area)
        dropped = drop_objects(lab, rng)
        forgotten = with_outline(lab, dropped)
        out.append({
            "stem": lab_path.stem, "image": Path(img_path), "truth": lab, "palette": lf.palette,
            "missing-blocks": (np.where(b, IGNORE, lab), b),
            "paper-cells": (np.where(paper_cells(lab), IGNORE, lab), paper_cells(lab)),
            "zero-blocks": (np.where(b, 0, lab), b),
            "dropped-objects": (np.where(dropped, 0, lab), dropped),
            "forgotten-objects": (np.where(forgotten, 0, lab), forgotten),
            "clean": (lab, np.zeros(lab.shape, bool)),
        })
    return out


def wrong_pixels(fixed: np.ndarray, truth: np.ndarray, region: np.ndarray, damaged: np.ndarray) -> dict:
    """Where labelfix's wrong pixels in a damaged region are (counts): what was mistaken for what (background
    is class 0), whether the true class is still anywhere in the damaged label, within 3 px of a true
    boundary, and more than 5 px inside the region (from its nearest undamaged pixel)."""
    scored = region & (truth != IGNORE)
    wrong = scored & (fixed != truth)
    still_shown = np.isin(truth, np.unique(damaged[~region]))
    t, f = truth[wrong], fixed[wrong]
    edges = torch.zeros((1, 1) + truth.shape, dtype=torch.bool)
    edges[0, 0, 1:] |= torch.from_numpy(truth[1:] != truth[:-1])
    edges[0, 0, :, 1:] |= torch.from_numpy(truth[:, 1:] != truth[:, :-1])
    near_edge = (torch.nn.functional.max_pool2d(edges.float(), 7, 1, 3)[0, 0] > 0).numpy()  # within 3 px
    _, inside = nearest_fill(torch.from_numpy(np.where(region, -1, 0))[None], with_distance=True)
    lost = ~still_shown[wrong]
    return {"scored": int(scored.sum()), "wrong": int(wrong.sum()), "class_gone": int(lost.sum()),
            "object_as_background": int(((t != 0) & (f == 0) & ~lost).sum()),
            "background_as_object": int(((t == 0) & (f != 0) & ~lost).sum()),
            "object_as_object": int(((t != 0) & (f != 0) & ~lost).sum()),
            "near_true_edge": int(near_edge[wrong].sum()), "deep_inside": int((inside[0].numpy()[wrong] > 5).sum())}


def write_job(items, damaged, folder: Path) -> tuple[Path, Path]:
    """folder/labels: the labels `damaged(item)` of the items as palette PNGs; folder/images: their images
    (links). Returns both folders, what `repair` takes."""
    labels, images = folder / "labels", folder / "images"
    labels.mkdir(parents=True)
    images.mkdir(parents=True)
    for it in items:
        im = Image.fromarray(damaged(it).astype(np.uint8), mode="P")
        im.putpalette(it["palette"])
        im.save(labels / f"{it['stem']}.png")
        (images / it["image"].name).symlink_to(it["image"].resolve())
    return labels, images


def dataset_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments every quality benchmark takes: which labels of which dataset, repaired by which bank."""
    ap.add_argument("--data", required=True)
    ap.add_argument("--bank", default=None)
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)


def run_case(items, case, bank, tmp: Path, missing: bool, crf: bool, K: int, errors: bool = False,
             erasures: bool = True, precision: str = "auto"):
    lab_dir, img_dir = write_job(items, lambda it: it[case][0], tmp / case)
    out_dir = tmp / case / "out"
    t0 = time.perf_counter()
    res = repair(RepairSettings(labels=lab_dir, images=img_dir, out=out_dir, bank=bank, find_erasures=erasures,
                                missing=(IGNORE,) if missing else (), precision=precision))
    seconds = time.perf_counter() - t0
    assert res.failed == 0, [r.error for r in res.rows if r.error]
    conf = {"labelfix": torch.zeros(K, K, dtype=torch.long)}
    if missing:
        conf["nearest-label"] = torch.zeros(K, K, dtype=torch.long)
        if crf:
            conf["dense-crf"] = torch.zeros(K, K, dtype=torch.long)
    undamaged_changed = undamaged_total = 0
    where_wrong: dict[str, int] = {}
    for it in items:
        truth = it["truth"].astype(np.int64)
        truth_t = torch.from_numpy(np.where(truth == IGNORE, -1, truth))
        damaged_in, region = it[case]
        region_t = torch.from_numpy(region)
        fixed = np.array(Image.open(out_dir / f"{it['stem']}.png")).astype(np.int64)
        conf["labelfix"] += confusion(torch.from_numpy(fixed), truth_t, K, region_t)
        if errors:
            for k, v in wrong_pixels(fixed, truth, region, damaged_in).items():
                where_wrong[k] = where_wrong.get(k, 0) + v
        if missing:
            known = np.where(damaged_in == IGNORE, -1, damaged_in).astype(np.int64)
            unknown = damaged_in == IGNORE
            conf["nearest-label"] += confusion(torch.from_numpy(nearest_label(known, unknown)), truth_t, K, region_t)
            if crf:
                image = np.array(Image.open(it["image"]).convert("RGB"))
                conf["dense-crf"] += confusion(torch.from_numpy(dense_crf(image, known, unknown, K)), truth_t, K,
                                               region_t)
        else:
            valid = ~region & (truth != IGNORE)
            undamaged_changed += int((fixed[valid] != damaged_in[valid]).sum())
            undamaged_total += int(valid.sum())
    row = {"case": case, "images": len(items), "repair_seconds": round(seconds, 2),
           "repair_images_per_s": round(len(items) / seconds, 2),
           "needs_review": sum(bool(r.needs_review) for r in res.rows)}
    if not missing:
        row["labels_filled"] = sum(r.objects_filled > 0 for r in res.rows)
    for m, c in conf.items():
        if case == "clean":
            continue  # nothing damaged to score
        if case.endswith("-objects"):
            # the dropped pixels are all objects: score the object classes (background has no truth here)
            iou = iou_per_class(c)[1:]
            row[m] = float(np.nanmean(iou) * 100)
        else:
            row[m] = mean_iou(c)
        row[f"{m}_per_class"] = [None if np.isnan(v) else round(float(v) * 100, 1) for v in iou_per_class(c)]
    if not missing:
        row["undamaged_changed_pct"] = round(100 * undamaged_changed / max(undamaged_total, 1), 3)
    if errors:
        row["wrong_pixels"] = where_wrong
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dataset_arguments(ap)
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N labels of the split")
    ap.add_argument("--side", type=int, default=None, help="bring images and labels to this longer side first "
                                                          "(e.g. 500, VOC's original size)")
    ap.add_argument("--block-area", type=float, default=None,
                    help="blocks of this share of the label each (0.1: about 3 blocks), not 5-15 smaller ones")
    ap.add_argument("--no-crf", action="store_true")
    ap.add_argument("--cases", default="missing-blocks,paper-cells,zero-blocks,dropped-objects,forgotten-objects")
    ap.add_argument("--errors", action="store_true", help="say where labelfix's wrong pixels are (wrong_pixels)")
    ap.add_argument("--no-erasures", action="store_true", help="blind repair without reading the outlines")
    ap.add_argument("--precision", default="auto", help="the model's: auto, fp32 or bf16 (as labelfix repair)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    ds = open_dataset(a.data)
    K = ds.classes.num_classes
    crf = crf_available() and not a.no_crf
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        items = damage_all(ds.pairs(a.split)[a.skip:][: a.limit], a.seed, a.side, tmp, a.block_area)
        for case in a.cases.split(","):
            row = run_case(items, case, a.bank, Path(tmp), case in ("missing-blocks", "paper-cells"), crf, K,
                           a.errors, not a.no_erasures, a.precision)
            rows.append(row)
            figures = {k: round(v, 1) for k, v in row.items() if k in ("labelfix", "nearest-label", "dense-crf")}
            extra = (f", undamaged pixels changed {row['undamaged_changed_pct']}%"
                     if "undamaged_changed_pct" in row else "")
            extra += f", objects filled in {row['labels_filled']} labels" if "labels_filled" in row else ""
            extra += f", {row['needs_review']} of {row['images']} labels to review"
            print(f"{case:16s} mIoU on damaged pixels: {figures}{extra}  ({row['repair_images_per_s']} img/s)",
                  flush=True)
            if a.errors:
                w = row["wrong_pixels"]
                print(f"{'':16s} wrong: {100 * w['wrong'] / max(w['scored'], 1):.1f}% of the damaged pixels; of those, "
                      + ", ".join(f"{k.replace('_', ' ')} {100 * w[k] / max(w['wrong'], 1):.1f}%" for k in
                                  ("object_as_background", "background_as_object", "object_as_object", "class_gone",
                                   "near_true_edge", "deep_inside")), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"data": a.data, "split": a.split, "bank": a.bank, "seed": a.seed,
                                            "block_area": a.block_area, "crf": crf, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
