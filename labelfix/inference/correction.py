"""The model's verdict on one label, at the model grid, with the finishing that applies."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..bank.manifest import Finishing
from .guided import RADIUS


@dataclass
class Correction:
    """The model's verdict on one label, at the model grid, to be finished at the original size."""
    logits: torch.Tensor       # (K, S, S): the model's logits minus the prior term, times the mode's weight
    prior_weight: float        # weight of the one-hot nearest-label prior the model adds to its logits
    reach: float               # at the model grid, the farthest any pixel is from a known pixel
    guided: bool = False       # finish with the image-guided filter (guided.py)
    colour: float = 0.0        # weight of the image's colour evidence (colour.py) added to the logits
    radius: float = RADIUS     # the guided filter's window radius, a share of the image's longer side
    background: int | None = None  # the background class, which `background_bias` favours
    background_bias: float = 0.0   # added to the background logit everywhere (calibrated per mode)
    extent: torch.Tensor | None = None  # (S, S) the bank's learned background bias per pixel (model/extent.py)
    extent_scale: float = 0.0      # how much of `extent` is added (calibrated per mode)
    # the boundary refiner's passes, in order: each decides the background/object boundaries the one
    # before it left (model/refiner.py); none, one or two (Bank.refiners)
    refiners: tuple[torch.nn.Module, ...] = ()

    def scaled(self, f: Finishing) -> Correction:
        """This correction finished as `f` says (its weight times the logits; radius None keeps this one's)."""
        return Correction(self.logits * f.weight, self.prior_weight, self.reach, f.guided, f.colour,
                          self.radius if f.radius is None else f.radius, self.background, f.background_bias,
                          self.extent, f.extent, self.refiners)

    def final_logits(self) -> torch.Tensor:
        """(K, S, S) the correction with the background biases added."""
        uses_extent = self.extent is not None and self.extent_scale != 0
        if (not self.background_bias and not uses_extent) or self.background is None:
            return self.logits
        out = self.logits.clone()
        out[self.background] += self.background_bias
        if uses_extent:
            out[self.background] += self.extent_scale * self.extent
        return out
