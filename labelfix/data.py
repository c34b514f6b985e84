"""Datasets on disk: the VOC layout and a generic layout, label reading, and training samples.

VOC:      JPEGImages/*.jpg, SegmentationClass/*.png (palette), ImageSets/Segmentation/{train,val}.txt
generic:  images/*, labels/*.png (index PNGs), splits/{train,val}.txt, classes.json
A `classes.json` at the top of either layout gives names / ignore_index / background_index.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .classes import ClassSet, voc_palette
from .errors import DataError, InputFileError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")  # looked for in this order
PHOTO_EXTS = tuple(e for e in IMAGE_EXTS if e != ".png")  # images that cannot be labels (labels are PNGs)
VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
             "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
             "train", "tvmonitor")


@dataclass(frozen=True)
class LabelFile:
    """A decoded label: raw values, and what is needed to write it back in the same format."""
    values: np.ndarray            # (H, W) uint8 or uint16, the numbers stored in the file
    mode: str                     # PIL mode: "P", "L" or "I;16"
    palette: list[int] | None     # the file's palette for mode "P"


def read_label(path: Path, max_pixels: int | None = None) -> LabelFile:
    """Read a label PNG; raises InputFileError with the reason if it cannot be a label map (or holds more
    than `max_pixels`, checked before it is decoded)."""
    try:
        with Image.open(path) as im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise InputFileError(path, f"is {im.width}x{im.height} ({im.width * im.height / 1e6:.0f} megapixels); "
                                           f"labelfix repairs labels of up to {max_pixels / 1e6:.0f}: "
                                           "split it into tiles")
            im.load()
            mode = im.mode
            if mode in ("RGB", "RGBA"):
                raise InputFileError(path, f"is a colour ({mode}) image, not an index or palette label map; "
                                           "convert it to class indices first")
            if mode not in ("P", "L", "I;16", "I"):
                raise InputFileError(path, f"has PIL mode {mode}, not an index or palette label map")
            palette = im.getpalette() if mode == "P" else None
            values = np.array(im)
    except InputFileError:
        raise
    except FileNotFoundError:
        raise InputFileError(path, "does not exist") from None
    except PermissionError:
        raise InputFileError(path, "cannot be read (permission denied)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputFileError(path, f"is not a readable PNG ({e})") from None
    if values.ndim != 2:
        raise InputFileError(path, f"has {values.ndim} dimensions, expected a single-channel map")
    return LabelFile(values, mode, palette)


# EXIF orientations that turn an image a quarter (transposed, rotated 90 or 270, transversed): its stored
# width and height swap when it is shown upright
_QUARTER_TURNS = (5, 6, 7, 8)
_ORIENTATION_TAG = 0x0112


def read_image(path: Path, label_shape: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB; raises InputFileError with the reason.

    label_shape: the (H, W) of the image's label. A camera stores a portrait photo sideways with an EXIF
    orientation, and annotation tools label it as shown, upright: when the stored pixels do not have the
    label's shape but the upright ones do, the upright image is returned. Otherwise the stored pixels, as
    other loaders read them (a photo turned half-way keeps its shape: nothing tells which way it was
    labelled)."""
    try:
        with Image.open(path) as im:
            if (label_shape is not None and (im.width, im.height) == tuple(label_shape) != (im.height, im.width)
                    and im.getexif().get(_ORIENTATION_TAG) in _QUARTER_TURNS):
                im = ImageOps.exif_transpose(im)
            if label_shape is not None and (im.height, im.width) != tuple(label_shape):  # before decoding it
                raise InputFileError(path, f"is {im.width}x{im.height} but its label is "
                                           f"{label_shape[1]}x{label_shape[0]}")
            return np.array(im if im.mode == "RGB" else im.convert("RGB"))  # convert would copy an RGB image
    except InputFileError:
        raise
    except FileNotFoundError:
        raise InputFileError(path, "does not exist") from None
    except PermissionError:
        raise InputFileError(path, "cannot be read (permission denied)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputFileError(path, f"is not a readable image ({e})") from None


# Cityscapes names a label after its image with another suffix: X_gtFine_labelIds.png is X_leftImg8bit.png's
CITYSCAPES_LABEL = re.compile(r"^(.+)_gt(?:Fine|Coarse)_(?:labelIds|labelTrainIds)$")
# and its folders hold more than label maps: colours, instances and polygons, which are not labels to repair
CITYSCAPES_COMPANION = re.compile(r"_gt(?:Fine|Coarse)_(?:color\.png|instanceIds\.png|polygons\.json)$")
# suffixes that name a label rather than its image (x_mask.png is x.jpg's label), tried after the label's own stem
LABEL_SUFFIXES = ("_labelTrainIds", "_labelIds", "_trainIds", "_train_id", "_segmentation", "_mask", "_label",
                  "_labels", "_seg", "_gt")


def image_stems(label_stem: str) -> list[str]:
    """The stems a label's image may have, in the order looked for: the label's own; for a Cityscapes label,
    its `_leftImg8bit` image's; and the label's without a suffix that names a label (`_mask`, `_label`, ...)."""
    stems = [label_stem]
    cityscapes = CITYSCAPES_LABEL.match(label_stem)
    if cityscapes:
        stems.append(f"{cityscapes.group(1)}_leftImg8bit")
    suffix = next((x for x in LABEL_SUFFIXES if label_stem.endswith(x) and len(label_stem) > len(x)), None)
    if suffix:
        stems.append(label_stem[:-len(suffix)])
    return stems


def find_image(images_dir: Path, label_stem: str) -> Path | None:
    """The image of the label with this stem (`image_stems`, then IMAGE_EXTS in order), or None."""
    for stem in image_stems(label_stem):
        for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
            p = images_dir / f"{stem}{ext}"
            if p.exists():
                return p
    return None


# files a dataset keeps beside its labels that are not label maps: read (classes.json) or left alone
COMPANION_SUFFIXES = (".json", ".txt", ".md", ".rst", ".csv", ".tsv", ".yaml", ".yml", ".xml", ".html", ".pdf")
COMPANION_STEMS = ("readme", "license", "licence", "notice", "changelog")


def is_companion(name: str) -> bool:
    """A file beside the labels that is not one: a Cityscapes colour map, instance ids or polygons, a
    classes.json, a README, a split list."""
    lower = name.lower()
    return bool(CITYSCAPES_COMPANION.search(name)) or lower.endswith(COMPANION_SUFFIXES) \
        or lower.split(".")[0] in COMPANION_STEMS


def list_label_files(labels: Path, recursive: bool = False) -> tuple[list[Path], int]:
    """The entries of the folder (and with `recursive`, of its subfolders) to repair, in the order of their
    names, and how many companions of its labels (is_companion) were left out of them. Every entry that is
    not a folder is listed, unreadable ones too (a broken link, a FIFO): repair reports why each cannot be
    read. Hidden files and folders are not looked at."""
    if recursive:
        files = []
        for folder, subfolders, names in os.walk(labels):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            files += [Path(folder) / n for n in names if not n.startswith(".")]
        files = sorted((p for p in files if not p.is_dir()), key=lambda p: relative_name(p, labels))
    else:
        files = sorted(p for p in labels.iterdir() if not p.name.startswith(".") and not p.is_dir())
    labels_only = [p for p in files if not is_companion(p.name)]
    return labels_only, len(files) - len(labels_only)


def relative_name(path: Path, labels: Path) -> str:
    """A label's name in the report and the output folder: its path under LABELS ('a.png', or with
    --recursive 'frankfurt/a.png')."""
    return path.relative_to(labels).as_posix()


def images_folder_candidates(labels: Path) -> list[Path]:
    """Where the common layouts keep the images of a folder of labels, in the order looked at: VOC
    (SegmentationClass beside JPEGImages), images/ beside labels/, ADE20K (annotations/training beside
    images/training), Cityscapes (gtFine/val/frankfurt beside leftImg8bit/val/frankfurt; gtFine/val and
    gtFine, for --recursive, beside leftImg8bit/val and leftImg8bit), and the labels folder itself."""
    labels = Path(labels)
    parent, grand = labels.parent, labels.parent.parent
    return [parent / "JPEGImages", parent / "images", grand / "images" / labels.name,
            grand / "JPEGImages" / labels.name, grand.parent / "leftImg8bit" / parent.name / labels.name,
            grand / "leftImg8bit" / labels.name, parent / "leftImg8bit", labels]


def holds_images_of(folder: Path, labels: list[Path], root: Path) -> bool:
    """Whether `folder` holds the image of one of `labels` (a label is not its own image), the image of a
    label in a subfolder of `root`, the labels' folder, looked for in that subfolder of `folder`."""
    return any(find_image(folder / label.parent.relative_to(root), label.stem) not in (None, label)
               for label in labels)


def guess_images_folder(labels: Path, recursive: bool = False, files: list[Path] | None = None) -> Path | None:
    """The first of `images_folder_candidates` that holds the image of a label of the folder (the first few
    labels are tried; with `recursive`, of its subfolders too, in the same subfolders), or None. files: the
    folder's `list_label_files`, if the caller has them."""
    labels = Path(labels)
    files = list_label_files(labels, recursive)[0] if files is None else files
    first = [f for f in files if f.suffix.lower() == ".png"][:8]
    for folder in images_folder_candidates(labels):
        if folder.is_dir() and holds_images_of(folder, first, labels):
            return folder
    return None


@dataclass(frozen=True)
class Dataset:
    """A dataset folder: its class set and, per split, (image path, label path) pairs."""
    root: Path
    layout: str
    classes: ClassSet
    images_dir: Path
    labels_dir: Path

    def split_ids(self, split: str) -> list[str]:
        f = (self.root / "ImageSets" / "Segmentation" / f"{split}.txt") if self.layout == "voc" \
            else (self.root / "splits" / f"{split}.txt")
        if not f.exists():
            raise DataError(f"{f}: split list not found (splits available: "
                            f"{', '.join(sorted(p.stem for p in f.parent.glob('*.txt'))) or 'none'})")
        return [line.strip() for line in f.read_text().splitlines() if line.strip()]

    def pairs(self, split: str) -> list[tuple[Path, Path]]:
        out = []
        for stem in self.split_ids(split):
            img = find_image(self.images_dir, stem)
            if img is None:
                raise DataError(f"{self.images_dir}: no image for '{stem}' listed in the {split} split")
            out.append((img, self.labels_dir / f"{stem}.png"))
        return out


def open_dataset(root: str | Path) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    classes_file = root / "classes.json"
    if (root / "SegmentationClass").is_dir() and (root / "JPEGImages").is_dir():
        classes = ClassSet.from_json(classes_file) if classes_file.exists() else ClassSet(VOC_NAMES, 255, 0)
        if classes.palette is None:
            classes = ClassSet(classes.names, classes.ignore_index, classes.background_index, tuple(voc_palette()))
        return Dataset(root, "voc", classes, root / "JPEGImages", root / "SegmentationClass")
    if (root / "images").is_dir() and (root / "labels").is_dir():
        if not classes_file.exists():
            raise DataError(f"{root}: generic layout needs classes.json "
                            '({"names": [...], "ignore_index": 255, "background_index": 0})')
        return Dataset(root, "generic", ClassSet.from_json(classes_file), root / "images", root / "labels")
    raise DataError(f"{root}: not a dataset labelfix can read; expected JPEGImages/ + SegmentationClass/ "
                    "(VOC) or images/ + labels/ + classes.json (generic)")


def load_pair(img_path: Path, label_path: Path, classes: ClassSet) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) int64 label in model indices (-1 = unlabelled)."""
    label = read_label(label_path).values
    image = read_image(img_path, label.shape)
    bad = classes.bad_values(label)
    if bad:
        raise InputFileError(label_path, f"has values {bad[:8]} outside the {classes.num_classes} classes "
                                         f"and ignore value {classes.ignore_index}")
    return image, classes.to_index(label)


def resize_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an (H, W, 3) uint8 image (bilinear) and (H, W) int label (nearest) to size x size."""
    img = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    lab = np.array(Image.fromarray(label.astype(np.int32)).resize((size, size), Image.NEAREST)).astype(np.int64)
    return img, lab


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
