"""A PNG of PA-mIoU against mask ratio, drawn with Pillow (no plotting dependency)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def plot_pa_miou(result, path: Path, size=(640, 420)) -> Path:
    W, H = size
    left, right, top, bottom = 60, 170, 30, 50
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    ratios = sorted({r["ratio"] for r in result.rows})
    lo_r, hi_r = (min(ratios) - 0.05, max(ratios) + 0.05)

    def xy(r, v):
        x = left + (r - lo_r) / (hi_r - lo_r) * (W - left - right)
        y = top + (1 - v / 100) * (H - top - bottom)
        return x, y

    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for v in range(0, 101, 20):
        _, y = xy(lo_r, v)
        d.line([left - 4, y, left, y], fill="black")
        d.text((left - 30, y - 6), f"{v}", fill="black")
    for r in ratios:
        x, _ = xy(r, 0)
        d.line([x, H - bottom, x, H - bottom + 4], fill="black")
        d.text((x - 12, H - bottom + 8), f"{r:.2f}", fill="black")
    d.text((left, 8), "PA-mIoU (%) against mask ratio", fill="black")
    d.text(((W - right + left) / 2 - 30, H - 20), "mask ratio", fill="black")
    for i, m in enumerate(result.methods):
        c = COLOURS[i % len(COLOURS)]
        pts = [xy(r["ratio"], r["pa_miou"])
               for r in sorted((r for r in result.rows if r["method"] == m), key=lambda r: r["ratio"])]
        if len(pts) > 1:
            d.line(pts, fill=c, width=3)
        for x, y in pts:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=c)
        d.line([W - right + 10, top + 10 + 20 * i, W - right + 30, top + 10 + 20 * i], fill=c, width=3)
        d.text((W - right + 35, top + 4 + 20 * i), m, fill="black")
    im.save(path)
    return Path(path)
