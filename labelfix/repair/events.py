"""What a repair reports as it runs: the events its `progress` callback receives, in order."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import ImageRow


@dataclass(frozen=True)
class Note:
    """Something the user should know that is not an error (a setting adjusted)."""
    message: str


@dataclass(frozen=True)
class RepairStarted:
    files: int          # label files found
    todo: int           # of them, those this run repairs (the others are resumed or another shard's)
    resumed: int        # done by an earlier run into the same folder, taken from its journal
    out: str
    images: str         # the images folder, as given or found
    companions: int     # files beside the labels that are not label maps, left out
    device: str
    precision: str
    processes: int


@dataclass(frozen=True)
class FileDone:
    """One label file repaired, unchanged or failed (once per file, in the order they finish)."""
    row: ImageRow


@dataclass(frozen=True)
class RepairDone:
    totals: dict        # the report's totals
