"""A bank's manifest.json, as one typed record: what `labelfix train` writes and `load_bank` reads.

    format_version            FORMAT_VERSION
    model_config, classes     the L-MAE config (model/config.py) and the class set (classes.py)
    input_size, patch_size    copies of the config's, for readers of the file
    ratios                    {"0.50": {file, sha256}}: one model per mask ratio
    trained_on, training, val records of how the bank was made (read by people, not by labelfix)
    encoder                   {file, sha256, name, licence, source, ...}: the frozen image encoder
    extent                    {file, sha256, hidden, correction_share, samples}: the learned background bias
    correction_weight, guided_filter, colour_weight, guided_radius, background_bias, extent_scale
                              {mode: value} each: the finishing calibration chose per repair mode (Finishing)
    calibration               what calibration measured: {images, chosen, scores, blind_undamaged_changed_pct}
    refiner, refiner_second   {file, sha256, hidden, samples, modes, scores, setting, images}: the boundary
                              refiner's passes and the repair modes where each applies

Entries a bank does not have are left out of the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..classes import ClassSet
from ..errors import BankError
from ..files import write_atomic
from ..model.config import LMAEConfig

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# the manifest entries of the boundary refiner's passes, in the order they decide
REFINER_PASSES = ("refiner", "refiner_second")


@dataclass(frozen=True)
class Finishing:
    """How repairs in one mode finish the model's output (train/calibrate.py measures and picks it)."""
    weight: float = 1.0           # share of the model's correction to the prior (0: nearest-label fill)
    guided: bool = False          # finish with the image-guided filter (inference/guided.py)
    colour: float = 0.0           # weight of the image's colour evidence (inference/colour.py)
    radius: float | None = None   # the guided filter's window, a share of the longer side (None: its default)
    background_bias: float = 0.0  # added to the background logit everywhere
    extent: float = 0.0           # share of the bank's learned per-pixel background bias (model/extent.py)


# Finishing's fields, each stored as its own {mode: value} entry of the file, in this order
FINISHING_KEYS = {"weight": "correction_weight", "guided": "guided_filter", "colour": "colour_weight",
                  "radius": "guided_radius", "background_bias": "background_bias", "extent": "extent_scale"}
MODE_ORDER = ("missing", "replace", "blind")  # the repair modes, in the order the file lists them
# the entries that name a weights file ({file, sha256, ...}) beside the ratio models
WEIGHTS_ENTRIES = ("encoder", "extent", *REFINER_PASSES)


@dataclass(frozen=True)
class Manifest:
    config: LMAEConfig
    classes: ClassSet
    ratios: dict[str, dict]                 # "0.50" -> {file, sha256}
    trained_on: dict | None = None
    training: dict | None = None
    val: dict | None = None
    encoder: dict | None = None
    extent: dict | None = None
    finishing: dict[str, Finishing] = field(default_factory=dict)  # repair mode -> its finishing
    calibration: dict | None = None
    refiner: dict | None = None
    refiner_second: dict | None = None
    extra: dict = field(default_factory=dict)  # entries this labelfix does not know: kept as they are

    def finishing_of(self, mode: str) -> Finishing:
        """A mode's finishing; a bank never calibrated applies the whole correction and nothing else."""
        return self.finishing.get(mode, Finishing())

    def weights_entries(self) -> dict[str, dict]:
        """The entries beside the ratio models that name a weights file: {key: {file, sha256, ...}}."""
        return {key: getattr(self, key) for key in WEIGHTS_ENTRIES if getattr(self, key)}

    def updated(self, **changes) -> Manifest:
        return replace(self, **changes)

    def to_json(self) -> dict:
        out = {"format_version": FORMAT_VERSION, "model_config": self.config.to_dict(),
               "classes": self.classes.to_dict(), "input_size": self.config.input_size,
               "patch_size": self.config.patch_size, "ratios": dict(sorted(self.ratios.items()))}
        for key in ("trained_on", "training", "val", "encoder", "extent"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.finishing:
            for name, key in FINISHING_KEYS.items():
                out[key] = {m: getattr(f, name) for m, f in self.finishing.items()}
        for key in ("calibration", *REFINER_PASSES):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, m: dict, where: str) -> Manifest:
        """The manifest of a parsed manifest.json; BankError saying what is wrong."""
        version = m.get("format_version")
        if version != FORMAT_VERSION:
            raise BankError(f"{where}: bank format version {version}, this labelfix reads version "
                            f"{FORMAT_VERSION}; upgrade labelfix or retrain the bank")
        try:
            cfg = LMAEConfig.from_dict(m["model_config"])
            classes = ClassSet.from_dict(m["classes"], where)
            ratios = m["ratios"]
            finishing = _read_finishing(m)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BankError(f"{where}: manifest is incomplete or invalid ({e})") from None
        if not isinstance(ratios, dict) or not all(isinstance(e, dict) for e in ratios.values()):
            raise BankError(f"{where}: 'ratios' must map each mask ratio to its model file "
                            '({"0.50": {"file": ..., "sha256": ...}}), not ' + type(ratios).__name__)
        for key in WEIGHTS_ENTRIES:
            entry = m.get(key)
            if entry is not None and not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                                          and isinstance(entry.get("sha256"), str)):
                raise BankError(f"{where}: '{key}' must name its weights file ({{\"file\": ..., \"sha256\": ...}})")
        named = {f.name for f in fields(cls)} - {"config", "classes", "ratios", "finishing", "extra"}
        known = {"format_version", "model_config", "classes", "input_size", "patch_size", "ratios", *named,
                 *FINISHING_KEYS.values()}
        return cls(cfg, classes, ratios, finishing=finishing, **{k: m.get(k) for k in named},
                   extra={k: v for k, v in m.items() if k not in known})

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST
        if not path.exists():
            raise BankError(f"{folder}: no {MANIFEST}; not a labelfix bank (make one with `labelfix train`)")
        try:
            parsed = json.loads(path.read_text())
        except ValueError as e:
            raise BankError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(parsed, dict):
            raise BankError(f"{path}: not a manifest (a JSON object is expected)")
        return cls.from_json(parsed, str(path))

    def write(self, folder: Path) -> None:
        """Write manifest.json into the bank folder, atomically."""
        write_atomic(Path(folder) / MANIFEST, (json.dumps(self.to_json(), indent=2) + "\n").encode())


def _read_finishing(m: dict) -> dict[str, Finishing]:
    """{mode: Finishing} from the six {mode: value} entries (a missing value: Finishing's default)."""
    entries = {name: m.get(key) or {} for name, key in FINISHING_KEYS.items()}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise ValueError(f"'{FINISHING_KEYS[name]}' must map each repair mode to a value")
    modes = {mode for entry in entries.values() for mode in entry}
    order = [mode for mode in MODE_ORDER if mode in modes] + sorted(modes - set(MODE_ORDER))
    out = {}
    for mode in order:
        values = {name: entries[name][mode] for name in entries if entries[name].get(mode) is not None}
        for name, value in values.items():
            wanted = bool if name == "guided" else (int, float)
            if not isinstance(value, wanted) or (name != "guided" and isinstance(value, bool)):
                raise ValueError(f"'{FINISHING_KEYS[name]}' of {mode} is {value!r}, not a "
                                 f"{'true/false' if name == 'guided' else 'number'}")
        out[mode] = Finishing(**{k: v if k == "guided" else float(v) for k, v in values.items()})
    return out


def update_manifest(folder: Path, **changes) -> Manifest:
    """Set entries of a bank's manifest (calibration, the small fitted models) and write it back atomically."""
    manifest = Manifest.read(folder).updated(**changes)
    manifest.write(folder)
    return manifest
