"""Does a bank's model gain from fine-tuning the image encoder with it, with the L-MAE loss, on a CPU?

    python benchmarks/encoder_finetune.py --data path/to/voc2012 --tune {frozen,stride32,stride16} --out DIR
        [--bank checkpoints/voc] [--ratio 0.5] [--epochs 4] [--tune-lr 2e-5]

The bank's model of --ratio trains --epochs more at that ratio, as `labelfix train` fine-tunes one (Adam
2e-4, its damage mix, one of the 8 fixed views an image per epoch), with the image encoder (--tune)

  frozen     as shipped: the control, what the extra epochs alone give;
  stride32   its stride-32 blocks and head trained too (Adam --tune-lr);
  stride16   the last stage before the stride-16 map trained as well (Lite0's blocks 8-10, 112 channels).

The trained encoder blocks share the model's weight decay and gradient clipping (one norm over both).
DIR (which must not exist) gets a copy of the bank holding that one model and the encoder it trained
with, the bank's other finishing parts as they are, to score with `labelfix bench --bank DIR` and
`python benchmarks/repair_quality.py --bank DIR`. The seconds an epoch include its validation.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labelfix.bank.store import load_bank, ratio_key, resolve_bank_path, save_weights, sha256  # noqa: E402
from labelfix.data import open_dataset  # noqa: E402
from labelfix.files import write_atomic  # noqa: E402
from labelfix.model.encoder import INPUT_MEAN, INPUT_SCALE  # noqa: E402
from labelfix.model.loss import class_weights, weighted_cross_entropy  # noqa: E402
from labelfix.train.features import attach, view_image  # noqa: E402
from labelfix.train.loop import class_shares, make_training_batch, validate  # noqa: E402
from labelfix.train.samples import TrainSamples  # noqa: E402
from labelfix.train.settings import TrainSettings  # noqa: E402


def first_tuned_block(encoder: nn.Module, tune: str) -> int:
    """The index of the first block that trains: after the stride-16 map, or the start of its stage."""
    tap = max(encoder.taps)
    if tune == "stride32":
        return tap + 1
    first = tap
    while first > 0 and encoder.blocks[first].shortcut:  # a stage's first block changes the shape
        first -= 1
    return first


class TunedPart(nn.Module):
    """The encoder from block `first` on: its input -> the stride-16 and stride-32 maps."""

    def __init__(self, encoder: nn.Module, first: int):
        super().__init__()
        self.tap = max(encoder.taps) - first  # the stride-16 map is this block's output (-1: the input)
        self.blocks = copy.deepcopy(encoder.blocks[first:]).requires_grad_(True)
        self.head = copy.deepcopy(encoder.head).requires_grad_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f16 = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.tap:
                f16 = x
        return f16, F.relu6(self.head(x))


def trunk(encoder: nn.Module, image: torch.Tensor, first: int) -> torch.Tensor:
    """image (B, 3, H, W) in [0, 1] through the encoder's stem and its blocks before `first`."""
    x = F.relu6(encoder.stem((image - INPUT_MEAN) / INPUT_SCALE))
    for block in encoder.blocks[:first]:
        x = block(x)
    return x


@torch.no_grad()
def trunk_maps(encoder: nn.Module, samples: TrainSamples, first: int, size: int) -> torch.Tensor:
    """(N * V, C, h, w) fp16: every view through the frozen encoder up to block `first`."""
    jobs = [(i, v) for i in range(len(samples)) for v in range(samples.view_count())]
    return torch.cat([trunk(encoder, torch.stack([view_image(samples, i, v, size) for i, v in jobs[s:s + 32]]),
                            first).half() for s in range(0, len(jobs), 32)])


def with_tuned_maps(samples: TrainSamples, part: TunedPart, inputs: torch.Tensor) -> list[torch.Tensor]:
    """The samples' cached maps with the stride-16 and -32 ones made by `part` from `inputs`."""
    with torch.no_grad():
        outs = [part(inputs[i:i + 64].float()) for i in range(0, len(inputs), 64)]
    return [samples.features.maps[0], torch.cat([o[0] for o in outs]).half(), torch.cat([o[1] for o in outs]).half()]


def write_bank(bank, out: Path, ratio: float, model: nn.Module, part: TunedPart | None, first: int) -> None:
    """A copy of `bank` holding only `model` (for `ratio`) and, with `part`, the tuned encoder."""
    shutil.copytree(bank.path, out)
    manifest = json.loads((out / "manifest.json").read_text())
    key = ratio_key(ratio)
    for entry in manifest["ratios"].values():  # the other ratios' models leave
        (out / entry["file"]).unlink()
    manifest["ratios"] = {key: {"file": f"ratio-{key}.safetensors",
                                "sha256": save_weights(model, out / f"ratio-{key}.safetensors", half=True)}}
    if part is not None:
        path = out / manifest["encoder"]["file"]
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
        weights = {k: v.contiguous() for k, v in bank.encoder().state_dict().items()}
        for k, v in part.state_dict().items():
            name, rest = k.split(".", 1)
            if name == "blocks":
                index, rest = rest.split(".", 1)
                k = f"blocks.{first + int(index)}.{rest}"
            weights[k] = v.detach().float().contiguous()
        write_atomic(path, save(weights, metadata=metadata))
        manifest["encoder"]["sha256"] = sha256(path)
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--bank", default=None)
    ap.add_argument("--tune", choices=("frozen", "stride32", "stride16"), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--tune-lr", type=float, default=2e-5)
    a = ap.parse_args()
    if Path(a.out).exists():
        sys.exit(f"{a.out}: already exists; name a new folder")
    recipe = TrainSettings(data=Path(a.data), out=Path(a.out))
    bank = load_bank(resolve_bank_path(a.bank))
    cfg, encoder = bank.config, bank.encoder()
    ds = open_dataset(a.data)
    train = TrainSamples(ds.pairs("train"), ds.classes, cfg.input_size, augment=True, seed=recipe.seed,
                         min_crop=recipe.min_crop, views=recipe.views)
    val = TrainSamples(ds.pairs("val"), ds.classes, cfg.input_size, augment=False)
    for samples in (train, val):
        attach(samples, encoder, bank.manifest.encoder["sha256"], cfg.encoder_size)
    weights = class_weights(class_shares(train, cfg.num_classes))
    model = copy.deepcopy(bank.model(a.ratio)).train()
    groups = [{"params": list(model.parameters()), "lr": recipe.finetune_lr}]
    part, first = None, first_tuned_block(encoder, a.tune)
    if a.tune != "frozen":
        part = TunedPart(encoder, first)
        reads_cache = first == max(encoder.taps) + 1  # the cached stride-16 map is the tuned part's input
        inputs = {name: s.features.maps[1] if reads_cache else trunk_maps(encoder, s, first, cfg.encoder_size)
                  for name, s in (("train", train), ("val", val))}
        groups.append({"params": list(part.parameters()), "lr": a.tune_lr})
    opt = torch.optim.Adam(groups, betas=(0.9, 0.999), weight_decay=recipe.weight_decay)
    gen = torch.Generator().manual_seed(recipe.seed)
    for epoch in range(a.epochs):
        t, total, order = time.time(), 0.0, torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
        view = epoch % train.view_count()
        steps = len(order) // recipe.batch_size
        for step in range(steps):
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size].tolist()
            items = [train[(i, epoch)] for i in idx]
            image, label = torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])
            if part is None:  # the cached maps
                maps = [torch.stack([it[m] for it in items]).float() for m in (2, 3, 4)]
            else:  # the cached stride-8 map; the others from the part being trained
                maps = [torch.stack([it[2] for it in items]).float(),
                        *part(inputs["train"][[i * train.view_count() + view for i in idx]].float())]
            label_in, removed, editable, target = make_training_batch(label, a.ratio, cfg, ds.classes,
                                                                      recipe.damage_mix, gen)
            loss = weighted_cross_entropy(model(image, label_in, removed, editable, features=maps), target, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            opt.step()
            total += loss.item()
        cached = val.features.maps
        if part is not None:
            val.features.maps = with_tuned_maps(val, part, inputs["val"])
        score = validate(model, val, a.ratio, ds.classes, torch.device("cpu"), recipe.batch_size)["pa_miou"]
        val.features.maps = cached
        print(f"epoch {epoch + 1}: loss {total / steps:.4f}, val PA-mIoU at {a.ratio} (model's size) {score:.1f}, "
              f"{time.time() - t:.0f} s", flush=True)
    write_bank(bank, Path(a.out), a.ratio, model.eval(), part, first)
    print(f"one-model bank written to {a.out}")


if __name__ == "__main__":
    main()
