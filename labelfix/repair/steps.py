"""One label's steps: read and prepare it, then finish, review and write it."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..bank.store import Bank
from ..classes import cityscapes_to_train_ids, is_cityscapes_label_ids, train_ids_to_cityscapes
from ..data import IMAGE_EXTS, LabelFile, find_image, image_stems, read_image, read_label
from ..errors import InputFileError
from ..files import FATAL_WRITE_ERRORS, OutputError, describe_write_error, unreadable_reason, write_atomic
from ..inference.finish import finish_labels, name_lost_objects
from ..inference.prepare import ModelInput, background_fraction, prepare
from ..policy import ERASURE_MARGIN, REVIEW_ORPHANED
from .discover import relative_name
from .erasure import find_erasures, orphaned_interiors, orphaned_outline, outline_lines, with_margin
from .preview import picture_stem
from .settings import ImageRow, RepairSettings

# a label (and its image) larger than this is refused, not repaired: one label is held whole, and its peak
# memory grows with it (144 megapixels peaked at 5.5 GB); split larger labels into tiles
MAX_LABEL_PIXELS = 50_000_000


@dataclass
class PreparedFile:
    row: ImageRow
    path: Path
    label: LabelFile | None = None
    index: np.ndarray | None = None      # (H, W) model indices, -1 unlabelled
    image: np.ndarray | None = None
    model_input: ModelInput | None = None
    allowed: np.ndarray | None = None
    unknown_share: float = 0.0           # of the pixels, those the model did not see labelled
    lost_objects: np.ndarray | None = None  # (H, W) bool: background inside orphaned outlines (blind fill)
    t0: float = 0.0


def prepare_file(path: Path, s: RepairSettings, bank: Bank) -> PreparedFile:
    t0 = time.perf_counter()
    labels = Path(s.labels)
    item = PreparedFile(ImageRow(relative_name(path, labels)), path, t0=t0)
    try:
        if path.suffix.lower() != ".png":
            raise InputFileError(path, "is not a PNG label map (labels must be .png)")
        unreadable = unreadable_reason(path)
        if unreadable:
            raise InputFileError(path, unreadable)
        lab = read_label(path, max_pixels=MAX_LABEL_PIXELS)
        classes = bank.classes
        values = lab.values
        if is_cityscapes_label_ids(path.name):
            if classes.num_classes != 19:
                raise InputFileError(path, f"is a Cityscapes labelIds file but the bank has {classes.num_classes} "
                                           "classes, not Cityscapes' 19 trainIds")
            values = cityscapes_to_train_ids(values)
        missing = np.logical_or.reduce([lab.values == v for v in s.missing]) if s.missing else None  # isin: 10x slower
        bad = [v for v in classes.bad_values(values) if v not in s.missing]
        if bad:
            raise InputFileError(path, f"has values {bad[:8]} outside the bank's {classes.num_classes} classes "
                                       f"(0..{classes.num_classes - 1}) and ignore value {classes.ignore_index}")
        images = Path(s.images) / path.parent.relative_to(labels)  # --recursive: the same subfolder of IMAGES
        img_path = find_image(images, path.stem)
        if img_path is not None and img_path.resolve() == path.resolve():
            img_path = None  # --images is the labels folder: the label is not its own image
        if img_path is None:
            raise InputFileError(path, f"no image named {' or '.join(image_stems(path.stem))}"
                                       f"{{{','.join(IMAGE_EXTS)}}} in {images}")
        unreadable = unreadable_reason(img_path)
        if unreadable:
            raise InputFileError(img_path, unreadable)
        image = read_image(img_path, lab.values.shape)  # an image of another size fails before it is decoded
        index = classes.to_index(values)
        if missing is not None:
            index[missing] = -1
        erased = None
        if missing is None and classes.background_index is not None:
            # an outline around background: an object lost its class; a person should check the class given back
            item.row.orphaned_outline = round(orphaned_outline(index, classes.background_index), 3)
            reading_outlines = s.find_erasures and s.policy == "fill"
            # blind fill: background cut off from objects along straight edges was erased; repair it as missing
            erased = find_erasures(index, classes.background_index) if reading_outlines else None
            if reading_outlines:
                # an erased object reaches past the columns its cut edges show: the background beside is decided too
                margin = round(ERASURE_MARGIN * max(index.shape))
                erased = with_margin(erased, index == classes.background_index, margin)
                # background ringed by an orphaned outline is an object that lost its class: the model decides it
                # as missing, and names it (name_lost_objects)
                item.lost_objects = orphaned_interiors(index, classes.background_index)
                erased |= item.lost_objects
            if erased is not None and erased.any():
                missing = erased
                item.row.erased_pixels = int(erased.sum())
        model_index = index if erased is None else np.where(erased, -1, index)  # erased: unknown to the model
        unknown = model_index < 0
        if unknown.all():
            raise InputFileError(path, "has no labelled pixel: nothing to complete it from")
        item.unknown_share = float(unknown.mean())
        item.row.background_fraction = round(background_fraction(index, classes.background_index), 4)
        mi, allowed = prepare(image, model_index, bank, missing=missing, blind=not s.missing and s.policy == "fill",
                              ratio=s.ratio, policy=s.policy)
        item.label, item.index, item.image, item.model_input, item.allowed = lab, index, image, mi, allowed
        item.row.ratio = mi.ratio
        item.row.patches_removed = int(mi.removed.sum())
    except InputFileError as e:  # the label's own problem, or its image's, named
        item.row.status = "failed"
        item.row.error = e.reason if Path(e.path) == path else f"its image {e.path} {e.reason}"
    except Exception as e:  # an unexpected decoder failure is still one file's problem
        item.row.status, item.row.error = "failed", f"{type(e).__name__}: {e}"
    return item


def encode_label(values: np.ndarray, like: LabelFile) -> bytes:
    """PNG bytes in the input's mode and palette."""
    im = Image.fromarray(values.astype(like.values.dtype))
    if like.mode == "P":
        im = im.convert("P") if im.mode != "P" else im
        im.putpalette(like.palette)
    elif im.mode != like.mode and like.mode in ("L", "I;16"):
        im = im.convert(like.mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _finish_one(item: PreparedFile, probs, s: RepairSettings, bank: Bank, out: Path) -> ImageRow:
    """Merge the prediction under the policy, write the label (and preview), fill the row."""
    row = item.row
    pred, conf = finish_labels(probs, item.index, item.model_input.hidden_full, item.allowed, item.image)
    lost = item.lost_objects
    if lost is not None:
        name_lost_objects(probs, pred, conf, lost)
    allowed = item.allowed
    confident = conf >= s.min_confidence
    change = allowed & confident & (pred != item.index)
    new_values = item.label.values.copy()
    written = pred[change]
    new_values[change] = train_ids_to_cityscapes(written) if is_cityscapes_label_ids(item.path.name) else written
    row.pixels_changed = int(change.sum())
    K = bank.classes.num_classes
    before = set(np.flatnonzero(np.bincount(item.index.ravel() + 1, minlength=K + 1)[1:]).tolist())  # -1 = none
    after = set(np.flatnonzero(np.bincount(written.ravel(), minlength=K)).tolist()) if row.pixels_changed else set()
    row.classes_added = ";".join(bank.classes.names[c] for c in sorted(after - before))
    row.mean_confidence = round(float(conf[change].mean()), 4) if row.pixels_changed else None
    held_back = int((allowed & ~confident).sum())
    # filling a thin unlabelled line (an outline) is placing a boundary within it: unsure by nature, and
    # harmless; review weighs the other changes (VOC val, clean labels, blind: 112 of 289 flagged -> 51)
    unlabelled = item.index < 0
    weighed = change & ~outline_lines(unlabelled) if (change & unlabelled).any() else change
    review_confidence = float(conf[weighed].mean()) if weighed.any() else None
    reasons = []
    if review_confidence is not None and review_confidence < s.review_below:
        reasons.append(f"its changes are {review_confidence:.2f} sure on average")
    if held_back > 0.2 * max(int(allowed.sum()), 1):
        reasons.append(f"--min-confidence held back {held_back / max(int(allowed.sum()), 1):.0%} of what it "
                       "could fill")
    if (row.orphaned_outline or 0.0) >= REVIEW_ORPHANED:
        reasons.append(f"{row.orphaned_outline:.0%} of its outline has background on both sides: "
                       "objects lost their class?")
    bg = bank.classes.background_index
    if not s.missing and bg is not None:  # blind: objects found where the label says background
        seen = ~item.model_input.hidden_full if lost is None else ~item.model_input.hidden_full | lost
        filled = change & (item.index == bg) & (pred != bg) & seen  # not erased pixels given back their object
        row.objects_filled = int(filled.sum())
        if row.objects_filled:
            found = sorted(set(np.flatnonzero(np.bincount(pred[filled], minlength=K)).tolist()))
            reasons.append(f"it filled {row.objects_filled} pixels the label has as background with "
                           f"{', '.join(bank.classes.names[c] for c in found)}: objects it lacked?")
    if item.unknown_share > max(bank.ratios):
        reasons.append(f"{item.unknown_share:.0%} of it was unknown, more than the bank learned to complete")
    row.needs_review = bool(reasons)
    row.review_reason = "; ".join(reasons)
    row.status = "repaired" if row.pixels_changed else "unchanged"
    if not s.dry_run:
        # the pictures first, the label last: a file whose label is written (and journalled) is done
        if s.preview:
            from .preview import write_preview_images
            write_preview_images(out / "preview", picture_stem(row.file), item.image, item.label.values,
                                 new_values, change, bank.classes)
        target = out / row.file
        if target.parent != out:
            target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, encode_label(new_values, item.label))
    row.seconds = round(time.perf_counter() - item.t0, 4)
    return row


def finish_file(item, correction, s, bank, out) -> ImageRow:
    try:
        return _finish_one(item, correction, s, bank, out)
    except OSError as e:
        if e.errno in FATAL_WRITE_ERRORS:  # the next file would fail the same way: stop, say it once
            raise OutputError(describe_write_error(e, Path(e.filename or out))) from None
        item.row.status, item.row.error = "failed", f"cannot write output ({e})"
        return item.row
