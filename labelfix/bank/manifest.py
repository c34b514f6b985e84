"""A bank's manifest.json."""

from __future__ import annotations

import json
from pathlib import Path

from ..classes import ClassSet
from ..files import write_atomic
from ..model.config import LMAEConfig

FORMAT_VERSION = 1


# the manifest entries of the boundary refiner's passes, in the order they decide
REFINER_PASSES = ("refiner", "refiner_second")


MANIFEST = "manifest.json"


def write_manifest(folder: Path, cfg: LMAEConfig, classes: ClassSet, files: dict[str, dict], extra: dict | None = None):
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_config": cfg.to_dict(),
        "classes": classes.to_dict(),
        "input_size": cfg.input_size,
        "patch_size": cfg.patch_size,
        "ratios": dict(sorted(files.items())),
        **(extra or {}),
    }
    _write_manifest_json(folder, manifest)
    return manifest


def update_manifest(folder: Path, entries: dict) -> dict:
    """Set top-level manifest entries (calibration, the small fitted models) and write it back atomically."""
    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    manifest.update(entries)
    _write_manifest_json(folder, manifest)
    return manifest


def _write_manifest_json(folder: Path, manifest: dict) -> None:
    write_atomic(Path(folder) / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
