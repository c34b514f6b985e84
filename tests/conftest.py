"""Synthetic data for the tests: a generic-layout dataset with 5 classes and a tiny bank trained on it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = {"names": ["background", "red", "green", "blue", "yellow"], "ignore_index": 255, "background_index": 0}


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the tests marked slow (CI does)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds; run with --runslow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


COLOURS = np.array([[40, 40, 40], [220, 30, 30], [30, 200, 40], [30, 40, 220], [230, 220, 30]], np.uint8)


def synthetic_pair(rng: np.random.Generator, h: int, w: int):
    """An image of coloured rectangles on grey and its index label (with a void border like VOC)."""
    label = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 4)):
        c = int(rng.integers(1, 5))
        y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        y1, x1 = y0 + rng.integers(6, h // 2 + 8), x0 + rng.integers(6, w // 2 + 8)
        label[y0:y1, x0:x1] = c
    image = COLOURS[label] + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
    edge = np.zeros_like(label, bool)
    edge[1:] |= label[1:] != label[:-1]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    label[edge] = 255
    return image, label


def make_dataset(root: Path, n_train=12, n_val=6, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for d in ("images", "labels", "splits"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    ids = []
    for i in range(n_train + n_val):
        h, w = (int(rng.integers(40, 72)), int(rng.integers(40, 72)))
        image, label = synthetic_pair(rng, h, w)
        Image.fromarray(image).save(root / "images" / f"s{i:03d}.jpg", quality=95)
        Image.fromarray(label, mode="L").save(root / "labels" / f"s{i:03d}.png")
        ids.append(f"s{i:03d}")
    (root / "splits" / "train.txt").write_text("\n".join(ids[:n_train]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(ids[n_train:]) + "\n")
    return root


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "synth")


@pytest.fixture(scope="session")
def bank(dataset, tmp_path_factory) -> Path:
    from labelfix.train.loop import train_bank
    from labelfix.train.settings import TrainSettings

    out = tmp_path_factory.mktemp("bank") / "bank"
    train_bank(TrainSettings(data=dataset, out=out, preset="tiny", epochs=2, finetune_epochs=1, batch_size=4,
                             val_every=0, ratios=(0.3, 0.5, 0.7), device="cpu"))
    return out


def tree_digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def job(dataset, tmp_path):
    """A labels/images pair of folders with holes punched into the labels (255 blocks and 0 blocks)."""
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    images.mkdir()
    ids = (dataset / "splits" / "val.txt").read_text().split()
    for i, stem in enumerate(ids):
        lab = np.array(Image.open(dataset / "labels" / f"{stem}.png"))
        lab[5:20, 5:25] = 255 if i % 2 == 0 else 0
        Image.fromarray(lab, mode="L").save(labels / f"{stem}.png")
        shutil.copy(dataset / "images" / f"{stem}.jpg", images / f"{stem}.jpg")
    return labels, images


def run(labels, images, bank, **kw):
    from labelfix.repair.run import repair
    from labelfix.repair.settings import RepairSettings

    kw.setdefault("classes", "bank")  # the synthetic labels are index PNGs of the test bank's classes
    kw.setdefault("batch_size", 4)
    return repair(RepairSettings(labels=labels, images=images, bank=str(bank), device="cpu", **kw))
