"""What a bench run reports as it goes: the events its `progress` callback receives."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchStarted:
    """The first event of a bench run."""
    images: int
    ratios: list[float]
    methods: list[str]


@dataclass(frozen=True)
class BenchBatch:
    """A batch of images scored at a ratio."""
    ratio: float
    done: int
    total: int
