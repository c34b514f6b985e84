"""Where a repair spends its time: milliseconds per image of each stage, on one torch thread.

Prepares the first N labels of a folder (decode, resize, decide what to remove), runs the bank in
batches of 8, finishes each label at full size (prior, guided filter) and encodes it as PNG, timing
each stage alone. Pair it with benchmarks/throughput.py to see how well the pipeline overlaps them.

    python benchmarks/phases.py LABELS --images IMAGES [--missing 255] [--n 32] [--bank checkpoints/voc] [--precision fp32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from labelfix.bank import load_bank
from labelfix.predict import finish_labels, run_model
from labelfix.repair import RepairSettings, _prepare_one, encode_label


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labels")
    ap.add_argument("--images", required=True)
    ap.add_argument("--missing", type=int, action="append", default=[])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--bank", default=None)
    ap.add_argument("--precision", default="auto", help="the model's: auto, fp32 or bf16")
    a = ap.parse_args()
    torch.set_num_threads(1)
    s = RepairSettings(labels=Path(a.labels), images=Path(a.images), missing=tuple(a.missing), bank=a.bank)
    bank = load_bank(a.bank)
    files = sorted(p for p in Path(a.labels).iterdir() if p.suffix == ".png")[: a.n]
    spent = {"prepare": 0.0, "model": 0.0, "finish": 0.0, "encode": 0.0}
    t = time.perf_counter()
    items = [it for it in (_prepare_one(f, s, bank) for f in files) if it.model_input is not None]
    spent["prepare"] = time.perf_counter() - t
    run_model(bank, [i.model_input for i in items[:8]], "cpu", precision=a.precision)  # warm-up
    corrections = []
    t = time.perf_counter()
    for b in range(0, len(items), 8):
        corrections += run_model(bank, [i.model_input for i in items[b:b + 8]], "cpu", precision=a.precision)
    spent["model"] = time.perf_counter() - t
    for it, c in zip(items, corrections):
        t = time.perf_counter()
        pred, _ = finish_labels(c, it.index, it.model_input.hidden_full, it.allowed, it.image)
        spent["finish"] += time.perf_counter() - t
        t = time.perf_counter()
        encode_label(pred.clip(min=0).astype(it.label.values.dtype), it.label)
        spent["encode"] += time.perf_counter() - t
    n = max(len(items), 1)
    print("  ".join(f"{k} {v / n * 1e3:.1f} ms" for k, v in spent.items()), f"per image ({len(items)} images)")


if __name__ == "__main__":
    main()
