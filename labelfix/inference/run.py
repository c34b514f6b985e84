"""Run the bank's models (and its image encoder) on prepared labels."""

from __future__ import annotations

import torch

from ..bank.store import Bank
from ..device import inference_autocast, resolve_precision
from ..model.extent import output_features
from ..model.propagate import nearest_fill
from .correction import Correction
from .prepare import ModelInput


@torch.no_grad()
def run_model(bank: Bank, items: list[ModelInput], device, calibrated: bool = True,
              precision: str = "auto") -> list[Correction]:
    """The bank's correction to the prior, per item, each computed alone (the same whatever the batch):
    the mean of all its models' (`_ensemble`); the item's ratio decided only what prepare removed.

    The nearest-label prior term is taken out here and added back at the original size by
    `finish_labels`, so labels keep full-resolution detail where the model does not disagree. Each
    correction carries the finishing the bank's calibration chose for the item's repair mode
    (`Bank.finishing`: weight, filter, colour evidence, background bias), unless `calibrated` is False.
    precision: auto, fp32 or bf16 (device.resolve_precision).
    """
    device = torch.device(device)
    out: list = [None] * len(items)
    # the finishing runs on the CPU, where auto is fp32: its refiner multiplies in bf16 only with precision bf16
    refiner_bf16 = resolve_precision(precision, torch.device("cpu")) == "bf16"
    # one label at a time: a batch's shapes (its padding, the kernels they select) would make a label's
    # numbers, and so now and then a pixel of its output, depend on the labels it shares a batch with
    bf16_weights = resolve_precision(precision, device) == "bf16"
    models = [bank.model(r, device, bf16_weights=bf16_weights) for r in bank.ratios]
    for i, item in enumerate(items):
        image, label, removed, editable = (t[None].to(device) for t in (item.image, item.label_in, item.removed,
                                                                         item.editable))  # a batch of one
        # computed once: the model's input and its prior; the 2-D mending passes (40% of the cost) settle
        # rare near-ties between two equally near known pixels, which do not matter to the model
        nearest = nearest_fill(label, with_distance=True, mend=False)
        with inference_autocast(device, precision):
            features = encode(bank, [item], device)
            logits, scale = _ensemble(models, image, label, removed, editable, nearest, features)
        # the learned background bias only where a mode applies it (calibration measures every mode)
        wanted = not calibrated or bank.finishing(item.mode).extent
        extent = _extent_maps(bank, label, nearest, logits, scale) if wanted else None
        reach = float(nearest[1].amax())
        plain = Correction(logits[0].cpu(), scale, reach, background=bank.classes.background_index,
                           extent=None if extent is None else extent[0])
        if calibrated:
            out[i] = plain.scaled(bank.finishing(item.mode))
            out[i].refiners = bank.refiners(item.mode, bf16=refiner_bf16)
        else:
            out[i] = plain
    return out


def _ensemble(models, image, label, removed, editable, nearest, features) -> tuple[torch.Tensor, float]:
    """(logits without the prior term, prior scale): the mean of every model of the bank on one label.

    Every model reads the label with the patches removed at the label's own ratio: the models, trained at
    different mask ratios, err in different places, and their mean beats the model of the label's own ratio on every
    VOC benchmark (docs/benchmarks.md). Averaging the logits with and without the prior term is the same,
    since each model's prior term is its scale times one and the same one-hot map."""
    logits, scale = 0.0, 0.0
    for model in models:
        logits = logits + model(image, label, removed, editable, nearest=nearest, without_prior=True,
                                features=features).float()
        scale += float(model.prior_scale) if model.prior_scale is not None else 0.0
    return logits / len(models), scale / len(models)


def encode(bank: Bank, items: list[ModelInput], device) -> list[torch.Tensor] | None:
    """The bank's image encoder's feature maps of the items' images, or None for a bank without one."""
    encoder = bank.encoder(device)
    if encoder is None:
        return None
    images = torch.stack([it.encoder_image for it in items]).to(device)
    return encoder(images.contiguous(memory_format=torch.channels_last))


def _extent_maps(bank: Bank, label: torch.Tensor, nearest, logits: torch.Tensor, prior_scale: float):
    """(B, S, S) the bank's learned background bias (model/extent.py) on the CPU, or None if it has none.

    label (B, S, S) what the model saw (-1 unknown); nearest (labels, distances) from nearest_fill;
    logits (B, K, S, S) the model's output without its prior, which is added back here."""
    extent = bank.extent()
    if extent is None or bank.classes.background_index is None:
        return None
    labels, distance = (t.cpu() for t in nearest)
    x, _ = output_features(label.cpu(), labels, distance, logits.cpu(), prior_scale, bank.classes.background_index,
                           float(bank.manifest.extent["correction_share"]))
    hole = label.cpu() < 0
    out = torch.zeros(hole.shape)
    with torch.no_grad():
        out[hole] = extent(x[hole])  # known pixels keep 0: the prior decides next to them
    return out
