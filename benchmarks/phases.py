"""Where a repair spends its time: milliseconds per image of each stage, on one torch thread.

Prepares the first N labels of a folder (decode, resize, decide what to remove), runs the bank in
batches of 8, finishes each label at full size (prior, guided filter) and encodes it as PNG, timing
each stage alone. Pair it with benchmarks/throughput.py to see how well the pipeline overlaps them.
With `--repeats R` the model and finishing stages run R times and each batch and label counts its
fastest run: on a shared CPU whose speed drifts by tens of percent from minute to minute, that is what
tells two versions of a stage apart.

    python benchmarks/phases.py LABELS --images IMAGES [--missing 255] [--n 32] [--bank checkpoints/voc]
        [--precision fp32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from labelfix.bank.store import load_bank
from labelfix.inference.finish import finish_labels
from labelfix.inference.run import encode, run_model
from labelfix.repair.settings import RepairSettings
from labelfix.repair.steps import encode_label, prepare_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labels")
    ap.add_argument("--images", required=True)
    ap.add_argument("--missing", type=int, action="append", default=[])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--bank", default=None)
    ap.add_argument("--precision", default="auto", help="the model's: auto, fp32 or bf16")
    ap.add_argument("--repeats", type=int, default=1, help="runs of the model and finishing; the fastest counts")
    a = ap.parse_args()
    torch.set_num_threads(1)
    s = RepairSettings(labels=Path(a.labels), images=Path(a.images), missing=tuple(a.missing), bank=a.bank,
                       classes="bank")
    bank = load_bank(a.bank)
    files = sorted(p for p in Path(a.labels).iterdir() if p.suffix == ".png")[: a.n]
    # "model" includes the image encoder; "image encoder" times it alone on the same batches
    spent = {"prepare": 0.0, "model": 0.0, "image encoder": 0.0, "finish": 0.0, "encode": 0.0}
    t = time.perf_counter()
    items = [it for it in (prepare_file(f, s, bank) for f in files) if it.model_input is not None]
    spent["prepare"] = time.perf_counter() - t
    run_model(bank, [i.model_input for i in items[:8]], "cpu", precision=a.precision)  # warm-up
    batches = [items[b:b + 8] for b in range(0, len(items), 8)]
    model_best, finish_best = [float("inf")] * len(batches), [float("inf")] * len(items)
    encoder_best = [float("inf")] * len(batches)
    for _ in range(max(a.repeats, 1)):
        corrections, preds = [], []
        for j, batch in enumerate(batches):
            t = time.perf_counter()
            corrections += run_model(bank, [i.model_input for i in batch], "cpu", precision=a.precision)
            model_best[j] = min(model_best[j], time.perf_counter() - t)
            t = time.perf_counter()
            with torch.inference_mode():
                encode(bank, [i.model_input for i in batch], "cpu")
            encoder_best[j] = min(encoder_best[j], time.perf_counter() - t)
        for j, (it, c) in enumerate(zip(items, corrections)):
            t = time.perf_counter()
            preds.append(finish_labels(c, it.index, it.model_input.hidden_full, it.allowed, it.image)[0])
            finish_best[j] = min(finish_best[j], time.perf_counter() - t)
    spent["model"], spent["finish"] = sum(model_best), sum(finish_best)
    spent["image encoder"] = sum(encoder_best)
    t = time.perf_counter()
    for it, pred in zip(items, preds):
        encode_label(pred.clip(min=0).astype(it.label.values.dtype), it.label)
    spent["encode"] = time.perf_counter() - t
    n = max(len(items), 1)
    print("  ".join(f"{k} {v / n * 1e3:.1f} ms" for k, v in spent.items()), f"per image ({len(items)} images)")


if __name__ == "__main__":
    main()
