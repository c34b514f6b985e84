"""The image encoder's features of the training views, computed once and cached on disk.

The encoder is frozen, so what it makes of a training view never changes: training computes it once for
every image and each of its fixed views (samples.TrainSamples `views`), keeps it in memory (fp16) and on
disk, and an epoch costs what it costs without an encoder. The cache lives in
`$LABELFIX_CACHE/features/` (default `~/.cache/labelfix/features/`), one file per key: the sha256 of the
encoder's weights, its input size, the views (seed, count, smallest crop) and every image and label
file's path, size and modification time. Any change to those makes a new key; old files can be
deleted at any time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save

from ..files import write_atomic
from .samples import TrainSamples

MAPS = ("stride8", "stride16", "stride32")


def cache_folder() -> Path:
    root = (os.environ.get("LABELFIX_CACHE")
            or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labelfix")
    return Path(root) / "features"


def cache_key(samples: TrainSamples, encoder_sha256: str, size: int) -> str:
    """What the features depend on, hashed: encoder, input size, views and the files' identities."""
    files = []
    for image, label in samples.pairs:
        for path in (image, label):
            st = os.stat(path)
            files.append([str(Path(path).resolve()), st.st_size, st.st_mtime_ns])
    what = {"encoder": encoder_sha256, "size": size, "augment": samples.augment, "seed": samples.seed,
            "views": samples.view_count(), "min_crop": samples.min_crop, "files": files}
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


def view_image(samples: TrainSamples, i: int, view: int, size: int) -> torch.Tensor:
    """(3, size, size) float in [0, 1]: sample i's view as the encoder sees it (resized from full resolution)."""
    image, _ = samples.cropped(i, samples.crop(i, view))
    img = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0


@torch.no_grad()
def compute(samples: TrainSamples, encoder: torch.nn.Module, size: int, batch: int = 16,
            progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Every view's feature maps: {map name: (N * V, C, h, w) fp16}, row i * V + view."""
    V = samples.view_count()
    jobs = [(i, v) for i in range(len(samples)) for v in range(V)]
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in MAPS}
    device = next(encoder.parameters()).device
    for start in range(0, len(jobs), batch):
        images = torch.stack([view_image(samples, i, v, size) for i, v in jobs[start:start + batch]])
        maps = encoder(images.to(device).contiguous(memory_format=torch.channels_last))
        for name, f in zip(MAPS, maps):
            parts[name].append(f.half().cpu().contiguous())
        if progress:
            progress(min(start + batch, len(jobs)), len(jobs))
    return {m: torch.cat(p) for m, p in parts.items()}


def attach(samples: TrainSamples, encoder: torch.nn.Module, encoder_sha256: str, size: int,
           progress: Callable[[int, int], None] | None = None) -> Path:
    """Give `samples` the encoder's features of its views, from the cache or computed (and cached).
    Returns the cache file."""
    path = cache_folder() / f"{cache_key(samples, encoder_sha256, size)}.safetensors"
    maps = None
    if path.exists():
        try:
            maps = load_file(str(path))
        except Exception:  # a damaged cache file is computed again
            maps = None
    if maps is None or set(maps) != set(MAPS):
        maps = compute(samples, encoder, size, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, save(maps))
    samples.features = ViewFeatures([maps[m] for m in MAPS], samples.view_count())
    return path


class ViewFeatures:
    """(index, view) -> the three feature maps of that view (fp16)."""

    def __init__(self, maps: list[torch.Tensor], views: int):
        self.maps, self.views = maps, views

    def __call__(self, i: int, view: int) -> list[torch.Tensor]:
        return [f[i * self.views + view] for f in self.maps]
