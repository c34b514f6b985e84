"""Property-based fuzzing of what reads the user's files: whatever bytes, mode, size or name, the readers
either return a well-formed result or raise InputFileError, never anything else, and pairing never crashes."""

import io
import string

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from labelfix.data import find_image, image_stems, read_image, read_label
from labelfix.errors import InputFileError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MODES = ("1", "L", "P", "I;16", "I", "F", "LA", "RGB", "RGBA", "CMYK", "YCbCr")
FORMAT = {"I": "TIFF", "F": "TIFF", "CMYK": "TIFF", "YCbCr": "JPEG"}  # the others as PNG


def _png(mode: str, w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.new(mode, (w, h))
    if mode in ("L", "P", "1"):
        im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=FORMAT.get(mode, "PNG"))
    return buf.getvalue()


@FAST
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_a_failed_label_and_a_failed_image(tmp_path, data):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    for read in (read_label, read_image):
        try:
            read(path)
        except InputFileError as e:
            assert e.path == str(path) and e.reason
        except Exception as e:  # anything else would be a traceback for the user
            raise AssertionError(f"{read.__name__} raised {type(e).__name__}: {e}")


@FAST
@given(mode=st.sampled_from(MODES), w=st.integers(1, 40), h=st.integers(1, 40), seed=st.integers(0, 9),
       cut=st.floats(0.0, 1.0))
def test_every_mode_size_and_truncation_reads_or_fails_cleanly(tmp_path, mode, w, h, seed, cut):
    data = _png(mode, w, h, seed)
    path = tmp_path / "x.png"
    path.write_bytes(data[: max(1, int(len(data) * cut))] if cut < 1.0 else data)
    try:
        label = read_label(path)
        assert label.values.ndim == 2 and label.values.shape == (h, w) and label.mode in ("P", "L", "I;16", "I")
    except InputFileError:
        pass
    try:
        image = read_image(path, (h, w))
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
    except InputFileError:
        pass


@FAST
@given(stem=st.text(alphabet=string.printable + "éß漢\u202e\x1b", min_size=1, max_size=40))
def test_pairing_never_crashes_on_odd_names(tmp_path, stem):
    stems = image_stems(stem)
    assert stems[0] == stem and all(isinstance(s, str) for s in stems)
    if "/" in stem or "\x00" in stem or stem in (".", ".."):
        return
    try:
        (tmp_path / f"{stem}.jpg").write_bytes(b"")
    except OSError:
        return  # a name the file system refuses
    assert find_image(tmp_path, stem) == tmp_path / f"{stem}.jpg"
