"""How much slower `labelfix train` and `labelfix repair` run beside other CPU-bound processes.

A fair share of a machine with C cores and N other busy processes predicts a slowdown of about
(N + 1) / C when N + 1 > C; thread pools that wait for each other (OpenMP's spinning, one thread per
core in every process) can make it far worse. Each command runs idle, then beside N processes that
spin on the CPU, alternately, `--repeats` times; the table gives the median seconds and the ratio.

    python benchmarks/under_load.py [--busy 3] [--repeats 2] [--images 50] [--classes 40]

train: the tiny preset, one epoch, on a synthetic dataset of --images images of --classes classes (made
here, with its own classes.json); repair: the bundled examples with the bundled bank.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def spin() -> None:
    while True:
        pass


def synthetic_dataset(root: Path, images: int, classes: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (classes, 3), dtype=np.uint8)
    for d in ("images", "labels", "splits"):
        (root / d).mkdir(parents=True)
    names = ["background"] + [f"class{i}" for i in range(1, classes)]
    (root / "classes.json").write_text(json.dumps({"names": names, "ignore_index": 255, "background_index": 0}))
    ids = []
    for i in range(images):
        label = np.zeros((96, 128), np.uint8)
        for _ in range(3):
            c = int(rng.integers(1, classes))
            y, x = rng.integers(0, 64), rng.integers(0, 96)
            label[y:y + 32, x:x + 32] = c
        image = colours[label] + rng.integers(0, 30, label.shape + (3,), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"s{i:03d}.jpg")
        Image.fromarray(label, mode="L").save(root / "labels" / f"s{i:03d}.png")
        ids.append(f"s{i:03d}")
    cut = images * 4 // 5
    (root / "splits" / "train.txt").write_text("\n".join(ids[:cut]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(ids[cut:]) + "\n")
    return root


def timed(cmd: list[str], cleanup: Path) -> float:
    shutil.rmtree(cleanup, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "LABELFIX_CACHE": str(cleanup.parent / "cache")})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--busy", type=int, default=3, help="CPU-bound processes beside the command")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--classes", type=int, default=40)
    a = ap.parse_args()
    labelfix = [sys.executable, "-m", "labelfix"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = synthetic_dataset(tmp / "data", a.images, a.classes)
        examples = ROOT / "examples" / "voc"
        commands = {
            "train": (labelfix + ["train", "--data", str(data), "--preset", "tiny", "--epochs", "1",
                                  "--finetune-epochs", "1", "--out", str(tmp / "bank"), "-q"], tmp / "bank"),
            "repair": (labelfix + ["repair", str(examples / "labels"), "--images", str(examples / "images"),
                                   "--missing", "255", "--out", str(tmp / "out"), "-q"], tmp / "out"),
        }
        times = {name: {"idle": [], "loaded": []} for name in commands}
        for _ in range(a.repeats):
            for name, (cmd, cleanup) in commands.items():
                times[name]["idle"].append(timed(cmd, cleanup))
                busy = [mp.Process(target=spin, daemon=True) for _ in range(a.busy)]
                for p in busy:
                    p.start()
                try:
                    times[name]["loaded"].append(timed(cmd, cleanup))
                finally:
                    for p in busy:
                        p.terminate()
        cores = os.cpu_count() or 1
        print(f"{cores} cores, {a.busy} busy processes beside; fair share predicts "
              f"{max(1.0, (a.busy + 1) / cores):.1f}x; median of {a.repeats} runs each")
        for name, t in times.items():
            idle, loaded = statistics.median(t["idle"]), statistics.median(t["loaded"])
            print(f"{name:7s} idle {idle:6.1f} s   loaded {loaded:6.1f} s   {loaded / idle:4.1f}x  "
                  f"(idle {', '.join(f'{x:.1f}' for x in t['idle'])}; "
                  f"loaded {', '.join(f'{x:.1f}' for x in t['loaded'])})")


if __name__ == "__main__":
    main()
