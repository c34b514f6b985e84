"""Training views of a dataset: fixed crops per image, and the sampler that tags each epoch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..classes import ClassSet
from ..data import load_pair, resize_pair


@dataclass(frozen=True)
class Crop:
    """A training view of an image: the box kept (pixels) and whether it is mirrored."""
    y0: int
    x0: int
    height: int
    width: int
    flip: bool


class TrainSamples(torch.utils.data.Dataset):
    """Image/label pairs held in memory, with the paper's augmentation (random crop, resize, flip).

    An item is addressed by (index, epoch), or by its index alone (epoch 0). Its crop is a function of
    the seed, the index and the view: with `views` 0 every epoch draws a new one; with `views` V the
    epoch picks one of V fixed crops per image (epoch mod V), whose image-encoder features can be
    computed once (features.py) and handed in as `features`, (index, view) -> the three maps. Without
    augmentation the one view is the whole image. Loader workers that outlive an epoch (persistent
    workers) still see each epoch's view when the sampler tags the indices (EpochTaggedSampler)."""

    def __init__(self, pairs, classes: ClassSet, size: int, augment: bool, seed: int = 0,
                 min_crop: float = 0.35, views: int = 0):
        self.pairs = list(pairs)
        self.data = [load_pair(i, lab, classes) for i, lab in self.pairs]
        self.size, self.augment, self.seed = size, augment, seed
        self.min_crop, self.views = min_crop, views
        self.features = None  # set by features.attach: (index, view) -> [f8, f16, f32]

    def __len__(self):
        return len(self.data)

    def view_count(self) -> int:
        """The fixed views per image: V, or 1 (the whole image) without augmentation."""
        return self.views if self.augment else 1

    def crop(self, i: int, view: int) -> Crop | None:
        """The crop of sample i in a view (a view number or, with `views` 0, the epoch), or None: the whole image."""
        if not self.augment:
            return None
        rng = np.random.default_rng((self.seed, view, i))
        H, W = self.data[i][1].shape
        scale = rng.uniform(self.min_crop, 1.0)  # share of the area kept by the crop
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(H, round(np.sqrt(scale * H * W / aspect))))
        cw = int(min(W, round(np.sqrt(scale * H * W * aspect))))
        y0, x0 = rng.integers(0, H - ch + 1), rng.integers(0, W - cw + 1)
        return Crop(int(y0), int(x0), ch, cw, bool(rng.random() < 0.5))

    def cropped(self, i: int, crop: Crop | None) -> tuple[np.ndarray, np.ndarray]:
        """Sample i's image and label inside the crop, at their own resolution."""
        image, label = self.data[i]
        if crop is None:
            return image, label
        image = image[crop.y0:crop.y0 + crop.height, crop.x0:crop.x0 + crop.width]
        label = label[crop.y0:crop.y0 + crop.height, crop.x0:crop.x0 + crop.width]
        if crop.flip:
            image, label = image[:, ::-1], label[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(label)

    def __getitem__(self, key):
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        view = epoch % self.view_count() if self.views or not self.augment else epoch
        img, lab = resize_pair(*self.cropped(i, self.crop(i, view)), self.size)
        item = (torch.from_numpy(img).permute(2, 0, 1).float() / 255.0, torch.from_numpy(lab))
        return item if self.features is None else item + tuple(self.features(i, view))


class EpochTaggedSampler(torch.utils.data.Sampler):
    """Yields (index, epoch) from an inner sampler (random or distributed); set_epoch reaches both."""

    def __init__(self, inner: torch.utils.data.Sampler):
        self.inner, self.epoch = inner, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self):
        return ((i, self.epoch) for i in self.inner)

    def __len__(self):
        return len(self.inner)
