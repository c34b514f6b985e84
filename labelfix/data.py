"""Labels and images on disk: reading them, finding a label's image, and the dataset layouts.

VOC:      JPEGImages/*.jpg, SegmentationClass/*.png (palette), ImageSets/Segmentation/{train,val}.txt
generic:  images/*, labels/*.png (index PNGs), splits/{train,val}.txt, classes.json
A `classes.json` at the top of either layout gives names / ignore_index / background_index."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


# Cityscapes names a label after its image with another suffix: X_gtFine_labelIds.png is X_leftImg8bit.png's label
CITYSCAPES_LABEL = re.compile(r"^(.+)_gt(?:Fine|Coarse)_(?:labelIds|labelTrainIds)$")


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
