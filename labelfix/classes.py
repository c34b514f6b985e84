"""The class set of a dataset or bank: names, the ignore value, the background class, the palette."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError


def voc_palette(n: int = 256) -> list[int]:
    """The standard Pascal VOC colour map, flattened to 3*n ints (what PIL's putpalette takes)."""
    pal = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


@dataclass(frozen=True)
class ClassSet:
    names: tuple[str, ...]
    ignore_index: int = 255                 # the "unlabelled" value in label files
    background_index: int | None = 0        # None: the dataset has no background class
    palette: tuple[int, ...] | None = field(default=None)  # flattened RGB, for drawing and palette PNGs

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "ignore_index": self.ignore_index,
                "background_index": self.background_index,
                "palette": list(self.palette) if self.palette else None}

    @classmethod
    def from_dict(cls, d: dict, source: str = "classes") -> "ClassSet":
        try:
            names = tuple(str(n) for n in d["names"])
        except (KeyError, TypeError):
            raise DataError(f"{source}: needs a 'names' list of class names") from None
        bg = d.get("background_index")
        if bg is not None and not 0 <= int(bg) < len(names):
            raise DataError(f"{source}: background_index {bg} is not a class index (0..{len(names) - 1})")
        ignore = int(d.get("ignore_index", 255))
        if 0 <= ignore < len(names):
            raise DataError(f"{source}: ignore_index {ignore} is also a class index")
        pal = d.get("palette")
        return cls(names, ignore, None if bg is None else int(bg), tuple(pal) if pal else None)

    @classmethod
    def from_json(cls, path: Path) -> "ClassSet":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read class list ({e})") from None
        return cls.from_dict(d, str(path))

    def color_palette(self) -> np.ndarray:
        """(256, 3) uint8 colours for drawing overlays; VOC colours when none are given."""
        pal = list(self.palette) if self.palette else voc_palette()
        pal = (pal + [0] * 768)[:768]
        return np.array(pal, dtype=np.uint8).reshape(256, 3)

    def to_index(self, values: np.ndarray) -> np.ndarray:
        """File values -> model indices: classes stay, the ignore value -> -1. (H, W) uint8/int -> int64."""
        out = values.astype(np.int64)
        out[values == self.ignore_index] = -1
        return out

    def bad_values(self, values: np.ndarray) -> list[int]:
        """Values that are neither a class nor the ignore value."""
        if values.dtype in (np.uint8, np.uint16):  # counting is much faster than sorting
            u = np.flatnonzero(np.bincount(values.ravel()))
        else:
            u = np.unique(values)
        return [int(v) for v in u if not (0 <= v < self.num_classes or v == self.ignore_index)]


# Cityscapes: `*_labelIds.png` hold the 34 raw ids; models use the 19 trainIds (255 = ignore).
CITYSCAPES_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def is_cityscapes_label_ids(name: str) -> bool:
    return name.endswith("_labelIds.png")


def cityscapes_to_train_ids(values: np.ndarray) -> np.ndarray:
    """labelIds -> trainIds (uint8), every id without a trainId -> 255."""
    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut[values.astype(np.int64).clip(0, 255)]


def train_ids_to_cityscapes(train_ids: np.ndarray) -> np.ndarray:
    """trainIds 0..18 -> their labelIds (for the pixels repair wrote)."""
    lut = np.zeros(256, np.int64)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[train_id] = label_id
    return lut[train_ids]
