"""Throughput of the whole `labelfix repair` command against a dense-CRF completion, side by side.

Val images of a VOC-layout dataset are brought to full VOC size (longer side 500 px, like the original
~500 x 375 images), ~30% of each label is erased to 255 in random blocks, and both methods complete
the same files: labelfix as a user runs it (a subprocess of the command, start-up included), the CRF
as a loop that reads, completes (nearest-label start, 5 mean-field iterations) and writes each file.

    python benchmarks/throughput.py --data path/to/voc2012 [--n 64] [--bank checkpoints/voc] [--batch-size 8]
        [--precision auto|fp32|bf16] [--processes N] [--repeats 3] [--splits val] [--side 500] [--no-crf]

On a GPU host, where a run of 289 labels is over in seconds, `--splits train,val --n 1111 --batch-size 32`
times more labels; without pydensecrf2 installed, or with `--no-crf`, the CRF is skipped (`--side 2048`
times labelfix on large labels, where the CRF takes seconds a label).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from labelfix.bench.baselines import crf_available, dense_crf
from labelfix.data import open_dataset

sys.path.insert(0, str(Path(__file__).parent))
from repair_quality import blocks  # noqa: E402


def make_full_size(pairs, folder: Path, side: int, seed: int):
    rng = np.random.default_rng(seed)
    (folder / "labels").mkdir(parents=True)
    (folder / "images").mkdir()
    for img_path, lab_path in pairs:
        im, lab = Image.open(img_path).convert("RGB"), Image.open(lab_path)
        scale = side / max(im.size)
        size = (round(im.size[0] * scale), round(im.size[1] * scale))
        im.resize(size, Image.BICUBIC).save(folder / "images" / img_path.name, quality=90)
        big = lab.resize(size, Image.NEAREST)
        values = np.array(big)
        values[blocks(values.shape, rng)] = 255
        out = Image.fromarray(values, mode="P")
        out.putpalette(lab.getpalette())
        out.save(folder / "labels" / lab_path.name)


def crf_complete(folder: Path, out: Path, num_classes: int, files: list[Path] | None = None) -> float:
    """Seconds to complete `files` (default: every label of the folder) with the dense CRF, read to written."""
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for lab_path in sorted((folder / "labels").glob("*.png")) if files is None else files:
        lab_im = Image.open(lab_path)
        values = np.array(lab_im)
        image = np.array(Image.open(folder / "images" / f"{lab_path.stem}.jpg").convert("RGB"))
        unknown = values == 255
        filled = dense_crf(image, np.where(unknown, -1, values).astype(np.int64), unknown, num_classes)
        res = Image.fromarray(filled.astype(np.uint8), mode="P")
        res.putpalette(lab_im.getpalette())
        res.save(out / lab_path.name)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--side", type=int, default=500)
    ap.add_argument("--bank", default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="the model's: auto (bf16 on CUDA), fp32 or bf16")
    ap.add_argument("--processes", default="0", help="the command's --processes (0: auto); several, comma-separated, "
                    "run alternately in each repeat (the first is compared with the CRF)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", default="val", help="comma-separated splits whose labels are used, in order")
    ap.add_argument("--repeats", type=int, default=3, help="labelfix runs; the median counts")
    ap.add_argument("--no-crf", action="store_true", help="time labelfix alone")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    ds = open_dataset(a.data)
    counts = [int(x) for x in a.processes.split(",")]
    result = {"images": a.n, "side": a.side, "precision": a.precision, "processes": counts[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs = [pair for split in a.splits.split(",") for pair in ds.pairs(split)][: a.n]
        a.n = len(pairs)
        result["images"] = a.n
        make_full_size(pairs, tmp / "in", a.side, a.seed)
        # the installed command; where labelfix is not installed (a bare GPU host), the same through python -m
        launcher = ["labelfix"] if shutil.which("labelfix") else [sys.executable, "-m", "labelfix"]
        cmd = launcher + ["repair", str(tmp / "in" / "labels"), "--images", str(tmp / "in" / "images"), "--missing",
               "255", "--out", str(tmp / "lf"), "--quiet", "--batch-size", str(a.batch_size), "--device", a.device,
               "--precision", a.precision]
        if a.bank:
            cmd += ["--bank", a.bank]
        # labelfix's run is short, so a passing slowdown of a shared CPU weighs far more on it than on
        # the CRF's long one: the command runs `--repeats` times (into a fresh folder) and the median
        # counts. The CRF's files are split in as many parts, one run between two of labelfix's, so that
        # both are timed over the same minutes of a CPU whose speed drifts.
        files = sorted((tmp / "in" / "labels").glob("*.png"))
        R = a.repeats
        crf_parts = ([files[r * len(files) // R:(r + 1) * len(files) // R] for r in range(R)]
                     if crf_available() and not a.no_crf else [])
        runs, crf = {n: [] for n in counts}, 0.0
        for r in range(a.repeats):
            for n in counts:
                shutil.rmtree(tmp / "lf", ignore_errors=True)
                t0 = time.perf_counter()
                subprocess.run(cmd + ["--processes", str(n)], check=True, stdout=subprocess.DEVNULL)
                runs[n].append(time.perf_counter() - t0)
                print(f"labelfix repair (whole command, --processes {n}), run {r + 1}: {a.n} images in "
                      f"{runs[n][-1]:.1f} s = {a.n / runs[n][-1]:.2f} img/s", flush=True)
            if crf_parts:
                crf += crf_complete(tmp / "in", tmp / "crf", ds.classes.num_classes, crf_parts[r])
        for n in counts:
            print(f"labelfix repair (whole command, --processes {n}), "
                  f"median: {a.n / statistics.median(runs[n]):.2f} img/s",
                  flush=True)
        if len(counts) > 1:
            result["by_processes"] = {n: {"images_per_s": round(a.n / statistics.median(runs[n]), 2),
                                          "runs_images_per_s": [round(a.n / t, 2) for t in runs[n]]} for n in counts}
        lf = statistics.median(runs[counts[0]])
        result["labelfix_images_per_s"] = round(a.n / lf, 2)
        result["labelfix_runs_images_per_s"] = [round(a.n / t, 2) for t in runs[counts[0]]]
        if crf_parts:
            result["dense_crf_images_per_s"] = round(a.n / crf, 2)
            result["speedup"] = round(crf / lf, 1)
            print(f"dense CRF completion:            {a.n} images in {crf:.1f} s = {a.n / crf:.2f} img/s "
                  f"(in {a.repeats} parts, between labelfix's runs)", flush=True)
            print(f"labelfix is {crf / lf:.1f}x the dense CRF's throughput")
        elif not a.no_crf:
            print("dense CRF skipped: pip install 'labelfix[crf]' (pydensecrf2)")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
