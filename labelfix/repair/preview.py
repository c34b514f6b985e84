"""Review pictures: the image with the old and the repaired label overlaid, changed pixels highlighted,
and one HTML page listing every image, those that need a human look first."""

from __future__ import annotations

import html
import io
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np
from PIL import Image

from ..classes import ClassSet
from ..files import write_atomic

THUMB = 320  # longest side of the preview pictures


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The pixels of a region within `width` of its edge: (H, W) bool -> (H, W) bool."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def thumbnail_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """(H, W) -> the preview picture's (h, w): the longer side THUMB at most, never enlarged."""
    H, W = shape
    scale = min(1.0, THUMB / max(H, W))
    return max(1, round(H * scale)), max(1, round(W * scale))


def shrink_any(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool -> (h, w) bool: set where any pixel of its share of the mask is (small changes stay)."""
    (H, W), (h, w) = mask.shape, shape
    rows = np.logical_or.reduceat(mask, np.arange(h) * H // h, axis=0)
    return np.logical_or.reduceat(rows, np.arange(w) * W // w, axis=1)


def overlay(image: np.ndarray, values: np.ndarray, classes: ClassSet, changed: np.ndarray | None = None) -> Image.Image:
    """Label colours over the image; unlabelled pixels light grey; the changed region outlined in magenta.

    Drawn at the preview's size (thumbnail_shape): the image resized, the labels sampled, the changed
    pixels kept wherever any falls, so that the outline is as wide on a large label as on a small one
    (and a 4000 x 3000 label costs no full-size float copies)."""
    H, W = values.shape
    h, w = thumbnail_shape((H, W))
    if (h, w) != (H, W):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR, reducing_gap=2.0))
        values = values[((np.arange(h) + 0.5) * H / h).astype(int)][:, ((np.arange(w) + 0.5) * W / w).astype(int)]
        changed = None if changed is None else shrink_any(changed, (h, w))
    pal = classes.color_palette()
    colour = pal[values.clip(0, 255)].astype(np.float32)
    unlabelled = (values == classes.ignore_index)[..., None]
    colour = np.where(unlabelled, np.array([235, 235, 235], np.float32), colour)
    out = 0.45 * image + 0.55 * colour
    if changed is not None and changed.any():
        out[outline(changed)] = (255, 0, 255)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def picture_stem(file: str) -> str:
    """The name of a label's pictures, less their '.before.jpg' / '.after.jpg': its report name less its
    suffix ('a', or with --recursive 'frankfurt/a')."""
    return PurePosixPath(file).with_suffix("").as_posix()


def write_preview_images(folder: Path, stem: str, image, old_values, new_values, changed, classes: ClassSet):
    (folder / stem).parent.mkdir(parents=True, exist_ok=True)
    for suffix, values, hl in (("before", old_values, None), ("after", new_values, changed)):
        buf = io.BytesIO()
        overlay(image, values, classes, hl).save(buf, format="JPEG", quality=85)
        write_atomic(folder / f"{stem}.{suffix}.jpg", buf.getvalue())


def write_preview_page(out: Path, rows) -> Path:
    """preview.html in `out`: every label with pictures (this run's, and those an earlier run drew of the
    files a resumed run did not redo), those that need review first, then the files that failed and why."""
    def has_pictures(r) -> bool:
        return (out / "preview" / f"{picture_stem(r.file)}.after.jpg").exists()

    done = [r for r in rows if r.status in ("repaired", "unchanged")]
    shown = sorted((r for r in done if has_pictures(r)), key=lambda r: (not r.needs_review, -(r.pixels_changed or 0)))
    undrawn = len(done) - len(shown)
    failed = [r for r in rows if r.status == "failed"]
    parts = ["<!doctype html><meta charset='utf-8'><title>labelfix review</title>",
             "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:4px}"
             ".row{border-bottom:1px solid #ccc;padding:6px}.review{background:#fff3e0}</style>",
             f"<h1>labelfix review</h1><p>{len(shown)} images; "
             f"{sum(bool(r.needs_review) for r in shown)} need review (listed first). Grey: unlabelled; magenta "
             "outline: the pixels labelfix changed."
             + (f" {len(failed)} failed (listed last)." if failed else "")
             + (f" {undrawn} labels repaired by an earlier run without --preview have no pictures "
                "(--overwrite redoes them)." if undrawn else "") + "</p>"]
    for r in shown:
        src = "preview/" + quote(picture_stem(r.file))  # a name may hold '#', '?' or spaces
        conf = "" if r.mean_confidence is None else f", mean confidence {r.mean_confidence:.2f}"
        cls = " review" if r.needs_review else ""
        parts.append(f"<div class='row{cls}'><b>{html.escape(r.file)}</b>: {r.pixels_changed} pixels changed{conf}"
                     f"{', added ' + html.escape(r.classes_added) if r.classes_added else ''}"
                     f"{' &mdash; <b>needs review</b>' if r.needs_review else ''}"
                     f"{': ' + html.escape(r.review_reason) if r.needs_review and r.review_reason else ''}<br>"
                     f"<figure><img loading='lazy' src='{src}.before.jpg'><figcaption>before</figcaption></figure>"
                     f"<figure><img loading='lazy' src='{src}.after.jpg'><figcaption>after</figcaption></figure></div>")
    if failed:
        items = "".join(f"<li><b>{html.escape(r.file)}</b>: {html.escape(r.error or '')}</li>" for r in failed)
        parts.append(f"<h2>Failed</h2><ul>{items}</ul>")
    page = out / "preview.html"
    write_atomic(page, "\n".join(parts).encode())
    return page
