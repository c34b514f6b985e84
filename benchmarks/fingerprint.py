"""One digest of what labelfix writes: repairs of the bundled examples in several modes, a tiny bank trained
on them, its bench and a repair with it. Equal digests before and after a change mean the change did not alter
behaviour (a refactor); the per-step digests say where it did.

    python benchmarks/fingerprint.py            # prints one line per step and the total
    PYTHONPATH=OTHER_CHECKOUT python benchmarks/fingerprint.py    # the same of another commit

Runs pinned to one core (taskset), so that thread counts, and with them float sums, do not follow the load.
Timings, this run's temporary paths and the bundled bank's place are left out of the reports before hashing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "voc"
UNSTABLE_KEYS = ("seconds", "per_s", "created", "elapsed", "started", "finished", "duration")


def labelfix(*args: str) -> None:
    """Run the command pinned to one core, outside any checkout (`python -m` would import the one in its cwd)."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    subprocess.run([*pin, sys.executable, "-m", "labelfix", *args], check=True, cwd=tempfile.gettempdir(),
                   stdout=subprocess.DEVNULL, env={"HF_HUB_OFFLINE": "1", "PATH": os.environ.get("PATH", ""),
                                                   "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def stable(value, tmp: str):
    """The value with timings dropped, this run's temporary folder and the bundled bank's folder renamed, and
    null entries left out (absent and null say the same)."""
    if isinstance(value, dict):
        return {k: stable(v, tmp) for k, v in value.items()
                if v is not None and not any(u in k for u in UNSTABLE_KEYS)}
    if isinstance(value, list):
        return [stable(v, tmp) for v in value]
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return "<sha256>"  # a file's hash: the files themselves are hashed, and a manifest holds timings
    if isinstance(value, str):
        return "<bundled bank>" if value.endswith("/checkpoints/voc") else value.replace(tmp, "<tmp>")
    return value


def digest(folder: Path, tmp: str) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
        data = f.read_bytes()
        if f.suffix in (".json", ".jsonl"):
            lines = [json.loads(line) for line in data.splitlines() if line.strip()] if f.suffix == ".jsonl" \
                else [json.loads(data)]
            data = json.dumps([stable(v, tmp) for v in lines], sort_keys=True).encode()
        elif f.suffix in (".html", ".csv", ".md", ".txt"):
            data = data.replace(tmp.encode(), b"<tmp>")
            if f.suffix == ".csv":
                continue  # carries the same rows as report.json, with timings
        h.update(str(f.relative_to(folder)).encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def damaged_copies(out: Path, kind: str) -> Path:
    """The bundled truth labels with blocks set to 255 or 0, or their largest object set to background."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in sorted((EXAMPLES / "truth").glob("*.png")):
        label = Image.open(f)
        values = np.array(label)
        if kind == "objects":
            classes, counts = np.unique(values[(values != 0) & (values != 255)], return_counts=True)
            values[values == classes[np.argmax(counts)]] = 0
        else:
            h, w = values.shape
            for _ in range(3):
                y, x = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
                values[y:y + h // 4, x:x + w // 4] = 255 if kind == "missing" else 0
        copy = Image.fromarray(values, mode="P")
        copy.putpalette(label.getpalette())
        copy.save(out / f.name)
    return out


def voc_dataset(out: Path) -> Path:
    """A VOC-layout dataset of the six examples: four train, two val."""
    (out / "ImageSets" / "Segmentation").mkdir(parents=True)
    shutil.copytree(EXAMPLES / "images", out / "JPEGImages")
    shutil.copytree(EXAMPLES / "truth", out / "SegmentationClass")
    stems = sorted(f.stem for f in (EXAMPLES / "truth").glob("*.png"))
    (out / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(stems[:4]) + "\n")
    (out / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems[4:]) + "\n")
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "bench").mkdir()
        images = str(EXAMPLES / "images")
        steps = {
            "examples --missing 255 --preview": ([str(EXAMPLES / "labels"), "--missing", "255", "--preview"], None),
            "blocks 255, replace, min-confidence": (["missing", "--missing", "255", "--policy", "replace",
                                                     "--min-confidence", "0.5", "--ratio", "0.5"], "missing"),
            "blocks 0, blind": (["zero"], "zero"),
            "objects dropped, blind, fp32": (["objects", "--precision", "fp32"], "objects"),
        }
        digests = {}
        for i, (name, (args, kind)) in enumerate(steps.items()):
            if kind is not None:
                args = [str(damaged_copies(tmp / kind, kind)), *args[1:]]
            labelfix("repair", args[0], "--images", images, "--out", str(tmp / f"out{i}"), "--quiet", *args[1:])
            digests[name] = digest(tmp / f"out{i}", str(tmp))
        data, bank = voc_dataset(tmp / "data"), tmp / "bank"
        labelfix("train", "--data", str(data), "--out", str(bank), "--preset", "tiny", "--epochs", "1",
                 "--finetune-epochs", "1", "--views", "1", "--calibrate-images", "2", "--val-every", "1", "--quiet")
        digests["tiny bank"] = digest(bank, str(tmp))
        labelfix("bench", "--data", str(data), "--bank", str(bank), "--metric", "pa-miou",
                 "--no-speed", "--json", str(tmp / "bench" / "bench.json"))
        digests["tiny bank bench"] = digest(tmp / "bench", str(tmp))
        labelfix("repair", str(tmp / "zero"), "--images", images, "--bank", str(bank), "--out", str(tmp / "outb"),
             "--quiet")
        digests["tiny bank blind repair"] = digest(tmp / "outb", str(tmp))
    for name, value in digests.items():
        print(f"{value}  {name}")
    print(f"{hashlib.sha256(''.join(digests.values()).encode()).hexdigest()[:16]}  all")


if __name__ == "__main__":
    main()
