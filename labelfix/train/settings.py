"""What a training run is asked to do, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DAMAGE_KINDS = ("paper", "missing-blocks", "blind-blocks", "blind-objects")

FINETUNE_SHARE = 0.2  # of --budget-minutes, for the per-ratio fine-tunes together


@dataclass(frozen=True)
class TrainSettings:
    data: Path
    out: Path
    ratios: tuple[float, ...] = (0.3, 0.5, 0.7)
    preset: str = "small"
    epochs: int = 30                 # base model epochs, mask ratios mixed
    finetune_epochs: int = 3         # per ratio, starting from the base model
    batch_size: int = 16
    input_size: int | None = None    # default: the preset's
    patch_size: int | None = None
    lr: float = 5e-4
    finetune_lr: float = 2e-4
    weight_decay: float = 1e-4
    damage_mix: tuple[float, ...] = (0.4, 0.3, 0.15, 0.15)  # DAMAGE_KINDS shares
    min_crop: float = 0.35           # smallest share of an image's area a training crop keeps
    views: int = 8                   # with an image encoder: fixed crops per image, whose features are cached
    encoder_weights: str | None = None  # the image encoder's weights (default: the --init or the bundled bank's)
    loss_on: str = "removed"         # "removed": unknown pixels only; "all": every labelled pixel
    train_split: str = "train"
    val_split: str = "val"
    val_every: int = 5               # epochs between validations
    val_images: int = 96             # val images used during training (0 = all)
    device: str = "auto"
    seed: int = 0
    workers: int = 0
    resume: bool = False
    max_minutes: float | None = None  # stop cleanly (state saved, resumable) after this long
    budget_minutes: float | None = None  # fit the schedule to this much training time (epochs become upper bounds)
    limit_images: int | None = None   # use only the first N training images (tests, smoke runs)
    calibrate_images: int = 64        # val images that set each repair mode's correction weight (0 = skip)
    init: str | None = None           # start from this bank's weights (same classes; its model config wins)


@dataclass
class TrainResult:
    bank: Path
    stages_done: list[str]
    seconds: float
    finished: bool
    final_val: dict = field(default_factory=dict)
