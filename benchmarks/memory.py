"""Peak resident memory of `labelfix repair` as the folder grows: it must stay flat (streaming).

Builds folders of N labels (symbolic links to the bundled examples, renamed) and runs the whole
command on each in a fresh process, reading the child's peak RSS from the kernel. With `--side S` the
examples are first brought to a longer side of S px (images bilinear, labels nearest), to see the
memory that large labels take (the command holds at most repair.PIXELS_IN_FLIGHT label pixels).

    python benchmarks/memory.py [--sizes 100,10000] [--side 4000] [--bank checkpoints/voc] [--dry-run]
        [--processes 1]

The command runs in one process (`--processes 1`) whatever the machine: on many cores its default splits a
large folder between processes (repair --processes), each with the memory of one, and the kernel reports
the peak of the largest of them, not their sum.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "voc"


def resized_examples(folder: Path, side: int) -> Path:
    """The bundled examples brought to a longer side of `side` px, in folder/{labels,images}."""
    from PIL import Image

    for sub in ("labels", "images"):
        (folder / sub).mkdir(parents=True)
    for lab_path in sorted((EXAMPLES / "labels").glob("*.png")):
        lab, im = Image.open(lab_path), Image.open(EXAMPLES / "images" / f"{lab_path.stem}.jpg")
        size = tuple(round(v * side / max(lab.size)) for v in lab.size)
        lab.resize(size, Image.NEAREST).save(folder / "labels" / lab_path.name)
        im.convert("RGB").resize(size, Image.BILINEAR).save(folder / "images" / f"{lab_path.stem}.jpg", quality=90)
    return folder


def build(folder: Path, n: int, examples: Path = EXAMPLES):
    labels, images = folder / "labels", folder / "images"
    labels.mkdir(parents=True)
    images.mkdir()
    srcs = sorted((examples / "labels").glob("*.png"))
    for i in range(n):
        src = srcs[i % len(srcs)]
        (labels / f"{i:06d}.png").symlink_to(src)
        (images / f"{i:06d}.jpg").symlink_to(examples / "images" / f"{src.stem}.jpg")
    return labels, images


def peak_rss_mb(cmd) -> tuple[float, float]:
    """Run cmd in a child; return (its peak RSS in MB, seconds)."""
    code = ("import resource, subprocess, sys, json, time; t=time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter()-t]))")
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True).stdout
    rss, secs = json.loads(out.strip().splitlines()[-1])
    return rss, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,10000")
    ap.add_argument("--side", type=int, default=None, help="bring the examples to this longer side first")
    ap.add_argument("--bank", default=None)
    ap.add_argument("--dry-run", action="store_true", help="pass --dry-run (no label writes; same pipeline)")
    ap.add_argument("--processes", default="1", help="the command's --processes (0: its default)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        examples = resized_examples(Path(tmp) / "examples", a.side) if a.side else EXAMPLES
        for n in (int(x) for x in a.sizes.split(",")):
            labels, images = build(Path(tmp) / str(n), n, examples)
            extra = (["--bank", a.bank] if a.bank else []) + (["--dry-run"] if a.dry_run else [])
            cmd = ["labelfix", "repair", str(labels), "--images", str(images), "--missing", "255", "--quiet",
                   "--out", str(Path(tmp) / f"out{n}"), "--processes", a.processes] + extra
            rss, secs = peak_rss_mb(cmd)
            rows.append({"labels": n, "peak_rss_mb": round(rss, 1), "seconds": round(secs, 1),
                         "images_per_s": round(n / secs, 2)})
            print(f"{n:>6} labels: peak RSS {rss:.0f} MB, {secs:.1f} s ({n / secs:.1f} img/s)", flush=True)
    print(f"ratio largest/smallest: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
