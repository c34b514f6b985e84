"""What a training run reports as it goes: the events its `progress` callback receives."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TrainStarted:
    params: int         # the L-MAE's parameters
    config: dict        # its config (model/config.py)
    train_images: int
    device: str
    world: int          # processes training together (DDP)
    stages: list[str]   # "base", then "finetune-R" per ratio


@dataclass(frozen=True)
class FeaturesStarted:
    """The image encoder's features of a split are computed (or read from the cache)."""
    images: int
    views: int


@dataclass(frozen=True)
class FeaturesStep:
    done: int
    total: int


@dataclass(frozen=True)
class Step:
    """One optimiser step of a stage's epoch."""
    stage: str
    epoch: int          # from 1
    epochs: int
    step: int           # from 1
    steps: int
    loss: float         # the epoch's mean so far
    images_per_s: float


@dataclass(frozen=True)
class EpochDone:
    """An epoch's end: a row of the bank's metrics.jsonl (`row`)."""
    stage: str
    epoch: int
    loss: float
    lr: float
    seconds: float
    images_per_s: float
    val: list[dict] | None = None  # validation per ratio, where this epoch validated

    def row(self) -> dict:
        values = {"event": "epoch", **asdict(self)}
        return {k: v for k, v in values.items() if k != "val" or v is not None}


@dataclass(frozen=True)
class FitStarted:
    """A step after the models are trained: "extent" (the background bias), "calibrate", "refiner" or
    "refiner-second" (the boundary refiner's passes)."""
    what: str
    images: int


@dataclass(frozen=True)
class ExtentFitted:
    samples: int
    seconds: float


@dataclass(frozen=True)
class CalibrateStep:
    done: int
    total: int


@dataclass(frozen=True)
class Calibrated:
    scores: dict        # {mode: {setting name: mIoU}}
    chosen: dict        # {mode: setting name}


@dataclass(frozen=True)
class RefinerFitted:
    second: bool        # the second pass
    samples: int
    modes: list[str]    # the repair modes it applies in
    seconds: float
    scores: dict | None = None  # {mode: [without, with]}
    skipped: str | None = None  # why none was fitted
