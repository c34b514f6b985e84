"""Does repair make a better segmenter? The paper's downstream experiment (its Table 4), split so that
nothing leaks.

VOC's train split is cut in two halves by a seeded shuffle of its ids. Half A trains a bank with
`labelfix train` (or `--bank` names one trained on half A only); half B's labels are damaged two ways:

  paper      50% of each label obscured: the most-background cells of a 14 x 14 grid set to 255, and
             repaired with --missing 255 (the paper's protocol)
  forgotten  about half of the objects of each label set to background with their outline (an object
             nobody drew), repaired blind

and one small segmenter is trained from scratch, with the same seed, schedule and augmentation, on
half B's images with four label sets each: the clean labels (the ceiling), the damaged labels as they
are (obscured pixels are void, left out of the loss), the damaged labels filled by nearest-label
propagation (the same as the damaged ones for forgotten objects: nothing is marked missing), and the
labels repaired by labelfix. Each is scored on the val split (21 classes, void excluded), and the
share of the clean-minus-damaged gap that repair wins back is reported.

The segmenter: a light FPN head (1x1 lateral convolutions, a 3x3 fusion, a 1x1 classifier at stride 8)
on the frozen EfficientNet-Lite0 features of the bank (its encoder.safetensors) at 224 x 224, flips
as the augmentation. The backbone is the same in every run, so the gaps are smaller than with a
segmenter learned from scratch (the paper's FCN and UNet); in exchange a run takes minutes on a CPU,
since the backbone's features are computed once.

This is a benchmark script rather than a `labelfix bench` mode: it trains a bank and eight segmenters
on a split of the user's training data, an experiment about labelfix, not a check of a bank.

    python benchmarks/downstream.py --data path/to/voc2012 [--bank BANK_TRAINED_ON_HALF_A]
        [--bank-epochs 20] [--epochs 30] [--json downstream.json] [--plot downstream.png]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from repair_quality import IGNORE, drop_objects, paper_cells, with_outline  # noqa: E402

from labelfix.bank.store import load_bank  # noqa: E402
from labelfix.bench.metrics import confusion, mean_iou  # noqa: E402
from labelfix.data import open_dataset, read_label  # noqa: E402
from labelfix.model.encoder import feature_channels  # noqa: E402
from labelfix.model.propagate import nearest_fill  # noqa: E402
from labelfix.repair.run import repair  # noqa: E402
from labelfix.repair.settings import RepairSettings  # noqa: E402

SIZE = 224
LABEL_SETS = ("clean", "damaged", "nearest", "labelfix")
DAMAGES = ("paper", "forgotten")


def split_halves(ids: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """The train ids in two disjoint halves (A: the bank's, B: the segmenters'), by a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    half = len(ids) // 2
    return sorted(shuffled[:half]), sorted(shuffled[half:])


def damage(label: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A VOC label (0 background, 255 void) damaged `kind`'s way."""
    if kind == "paper":
        return np.where(paper_cells(label), IGNORE, label).astype(np.uint8)
    return np.where(with_outline(label, drop_objects(label, rng)), 0, label).astype(np.uint8)


def half_dataset(root: Path, ds, ids: list[str], folder: Path) -> Path:
    """A VOC-layout folder whose train split is `ids` (links to the originals), val as it is."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for img, lab in ds.pairs("train") + ds.pairs("val"):
        for src, sub in ((img, "JPEGImages"), (lab, "SegmentationClass")):
            dst = folder / sub / src.name
            if not dst.exists():
                dst.symlink_to(src.resolve())
    (folder / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    (folder / "ImageSets/Segmentation/val.txt").write_text((root / "ImageSets/Segmentation/val.txt").read_text())
    if (root / "classes.json").exists():
        (folder / "classes.json").write_text((root / "classes.json").read_text())
    return folder


def write_labels(items, values, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for it, v in zip(items, values):
        im = Image.fromarray(v, mode="P")
        im.putpalette(it["palette"])
        im.save(folder / f"{it['stem']}.png")
    return folder


def label_sets(items, kind: str, bank: str, tmp: Path, seed: int) -> dict[str, list[np.ndarray]]:
    """The four label sets of half B for one kind of damage."""
    rng = np.random.default_rng(seed)
    damaged = [damage(it["truth"], kind, rng) for it in items]
    missing = kind == "paper"
    nearest = []
    for d in damaged:
        known = torch.from_numpy(np.where(d == IGNORE, -1, d.astype(np.int64)))[None]
        filled = nearest_fill(known)[0].numpy().astype(np.uint8)
        nearest.append(np.where(d == IGNORE, filled, d) if missing else d)
    labels = write_labels(items, damaged, tmp / kind / "labels")
    images = tmp / kind / "images"
    images.mkdir(exist_ok=True)
    for it in items:
        link = images / it["image"].name
        if not link.exists():
            link.symlink_to(it["image"].resolve())
    out = tmp / kind / "repaired"
    res = repair(RepairSettings(labels=labels, images=images, out=out, bank=bank,
                                missing=(IGNORE,) if missing else ()))
    assert res.failed == 0, [r.error for r in res.rows if r.error]
    repaired = [np.array(Image.open(out / f"{it['stem']}.png")) for it in items]
    return {"clean": [it["truth"] for it in items], "damaged": list(damaged), "nearest": nearest,
            "labelfix": repaired}


class Head(nn.Module):
    """A light FPN on the encoder's stride-8, -16 and -32 maps -> class logits at stride 8."""

    def __init__(self, channels: tuple[int, int, int], classes: int, width: int = 96):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.classify = nn.Conv2d(width, classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        x = sum(F.interpolate(lat(f.float()), size=size, mode="bilinear", align_corners=False)
                for lat, f in zip(self.lateral, maps))
        return self.classify(self.fuse(x))


@torch.no_grad()
def encode(encoder, images: list[np.ndarray], flip: bool) -> list[torch.Tensor]:
    out = []
    for start in range(0, len(images), 16):
        x = torch.stack([torch.from_numpy(np.array(Image.fromarray(im).resize((SIZE, SIZE), Image.BILINEAR)))
                         .permute(2, 0, 1).float() / 255 for im in images[start:start + 16]])
        if flip:
            x = x.flip(-1)
        out.append([f.half() for f in encoder(x.contiguous(memory_format=torch.channels_last))])
    return [torch.cat([part[m] for part in out]) for m in range(3)]


def resized(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.fromarray(label).resize((SIZE, SIZE), Image.NEAREST)).astype(np.int64))


def train_segmenter(features, labels: list[np.ndarray], channels, epochs: int, seed: int, progress, task) -> Head:
    """Same seed, schedule and augmentation (a flip, chosen by the seed) for every label set."""
    torch.manual_seed(seed)
    head = Head(channels, 21)
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    target = torch.stack([resized(v) for v in labels])
    target = torch.where(target == IGNORE, -1, target)
    gen = torch.Generator().manual_seed(seed)
    n = len(labels)
    for _ in range(epochs):
        head.train()
        order = torch.randperm(n, generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5
        for start in range(0, n, 16):
            idx = order[start:start + 16]
            fl = flips[idx]
            maps = [torch.where(fl.view(-1, 1, 1, 1), f[idx, 1], f[idx, 0]) for f in features]
            y = torch.where(fl.view(-1, 1, 1), target[idx].flip(-1), target[idx])
            logits = F.interpolate(head(maps), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y, ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        progress.advance(task)
    return head.eval()


@torch.no_grad()
def score(head: Head, features, labels: list[np.ndarray]) -> float:
    conf = torch.zeros(21, 21, dtype=torch.long)
    for i, label in enumerate(labels):
        logits = head([f[i:i + 1, 0] for f in features])
        pred = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False).argmax(1)[0]
        truth = torch.from_numpy(np.where(label == IGNORE, -1, label.astype(np.int64)))
        conf += confusion(pred, truth, 21)
    return mean_iou(conf)


def plot(result: dict, path: Path) -> None:
    W, H, left, bottom, top = 640, 380, 50, 50, 30
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    colours = [(44, 160, 44), (214, 39, 40), (255, 127, 14), (31, 119, 180)]
    group = (W - left - 20) / len(DAMAGES)
    d.text((left, 8), "val mIoU of a segmenter trained on each label set", fill="black")
    for g, kind in enumerate(DAMAGES):
        for j, name in enumerate(LABEL_SETS):
            v = result[kind][name]
            x0 = left + g * group + 20 + j * (group - 40) / 4
            y0 = top + (1 - v / 100) * (H - top - bottom)
            d.rectangle([x0, y0, x0 + (group - 40) / 4 - 6, H - bottom], fill=colours[j])
            d.text((x0, y0 - 12), f"{v:.1f}", fill="black")
        d.text((left + g * group + group / 2 - 30, H - bottom + 8), kind, fill="black")
    for j, name in enumerate(LABEL_SETS):
        d.rectangle([left + 10 + 120 * j, H - 22, left + 20 + 120 * j, H - 12], fill=colours[j])
        d.text((left + 25 + 120 * j, H - 24), name, fill="black")
    im.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--bank", default=None, help="a bank trained on half A only (default: train one here)")
    ap.add_argument("--bank-out", default=None, help="where to keep the bank trained on half A (default: dropped)")
    ap.add_argument("--bank-epochs", type=int, default=20)
    ap.add_argument("--bank-preset", default="small")
    ap.add_argument("--encoder-weights", default=None, help="passed to labelfix train (default: the bundled bank's)")
    ap.add_argument("--epochs", type=int, default=30, help="segmenter epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="only the first N images of half B and of val (smoke runs)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    a = ap.parse_args()
    root = Path(a.data)
    ds = open_dataset(root)
    half_a, half_b = split_halves(ds.split_ids("train"), a.seed)
    assert not set(half_a) & set(half_b)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bank = a.bank
        if bank is None:
            data_a = half_dataset(root, ds, half_a, tmp / "half-a")
            bank = a.bank_out or str(tmp / "bank-a")
            cmd = [sys.executable, "-m", "labelfix", "train", "--data", str(data_a), "--out", bank,
                   "--preset", a.bank_preset, "--epochs", str(a.bank_epochs), "--finetune-epochs", "2"]
            if a.encoder_weights:
                cmd += ["--encoder-weights", a.encoder_weights]
            print("training the bank on half A:", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True)
        encoder = load_bank(bank).encoder("cpu")
        channels = feature_channels(load_bank(bank).config.encoder)
        by_stem = {lab.stem: (img, lab) for img, lab in ds.pairs("train")}
        items = []
        for stem in half_b[: a.limit]:
            img, lab = by_stem[stem]
            lf = read_label(lab)
            items.append({"stem": stem, "image": img, "truth": lf.values, "palette": lf.palette})
        images = [np.array(Image.open(it["image"]).convert("RGB")) for it in items]
        val = ds.pairs("val")[: a.limit]
        val_labels = [read_label(lab).values for _, lab in val]
        val_images = [np.array(Image.open(img).convert("RGB")) for img, _ in val]
        print(f"encoding half B ({len(items)} images, with flips) and val ({len(val)})", flush=True)
        train_features = [torch.stack(pair, 1) for pair in zip(encode(encoder, images, False),
                                                                encode(encoder, images, True))]
        val_features = [f[:, None] for f in encode(encoder, val_images, False)]
        result = {"data": str(root), "bank": bank if a.bank else "trained on half A here", "half_a": len(half_a),
                  "half_b": len(half_b), "epochs": a.epochs, "seed": a.seed}
        clean_score = None
        with Progress() as progress:
            for kind in DAMAGES:
                sets = label_sets(items, kind, bank, tmp, a.seed)
                result[kind] = {}
                for name in LABEL_SETS:
                    if name == "clean" and clean_score is not None:
                        result[kind][name] = clean_score  # the same labels, seed and schedule
                        continue
                    task = progress.add_task(f"{kind}: {name}", total=a.epochs)
                    head = train_segmenter(train_features, sets[name], channels, a.epochs, a.seed, progress, task)
                    result[kind][name] = score(head, val_features, val_labels)
                    if name == "clean":
                        clean_score = result[kind][name]
                r = result[kind]
                gap = r["clean"] - r["damaged"]
                r["gap_won_back"] = (r["labelfix"] - r["damaged"]) / gap if gap > 0 else None
                progress.console.print(f"{kind}: " + ", ".join(f"{n} {r[n]:.1f}" for n in LABEL_SETS)
                                       + (f"; repair wins back {100 * r['gap_won_back']:.0f}% of the gap"
                                          if r["gap_won_back"] is not None else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    if a.plot:
        plot(result, Path(a.plot))


if __name__ == "__main__":
    main()
