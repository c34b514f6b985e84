import numpy as np

from labelfix.classes import ClassSet
from labelfix.repair.preview import THUMB, overlay, shrink_any, thumbnail_shape

CLASSES = ClassSet(names=[f"c{i}" for i in range(21)], ignore_index=255, background_index=0)


def test_thumbnails_fit_the_preview_size_and_small_pictures_stay_as_they_are():
    assert thumbnail_shape((3000, 4000)) == (240, THUMB) and thumbnail_shape((150, 200)) == (150, 200)
    small = overlay(np.zeros((150, 200, 3), np.uint8), np.zeros((150, 200), np.uint8), CLASSES)
    assert small.size == (200, 150)


def test_shrink_any_keeps_every_changed_pixel_somewhere():
    rng = np.random.default_rng(0)
    mask = rng.random((97, 131)) < 0.01
    small = shrink_any(mask, (20, 30))
    ys, xs = np.nonzero(mask)
    row = np.searchsorted(np.arange(20) * 97 // 20, ys, side="right") - 1  # the share each pixel falls in
    col = np.searchsorted(np.arange(30) * 131 // 30, xs, side="right") - 1
    assert small[row, col].all()
    assert small.sum() <= mask.sum()


def test_a_small_change_on_a_large_label_still_shows_in_magenta():
    H, W = 3000, 4000
    image = np.full((H, W, 3), 128, np.uint8)
    values = np.zeros((H, W), np.uint8)
    values[1000:2000, 1500:2500] = 15
    changed = np.zeros((H, W), bool)
    changed[2500:2503, 3000:3003] = True  # a 3 x 3 change, a thousandth of a preview pixel's share
    picture = np.asarray(overlay(image, values, CLASSES, changed))
    assert picture.shape == (240, THUMB, 3)
    assert magenta(picture).any() and magenta(picture).sum() <= 4
    assert not magenta(np.asarray(overlay(image, values, CLASSES, None))).any()


def magenta(picture):
    return (picture[..., 0] > 200) & (picture[..., 1] < 60) & (picture[..., 2] > 200)
