"""A model bank on disk: a folder with a manifest.json (bank/manifest.py) and the weights it lists.

    ratio-0.50.safetensors, ...   one L-MAE per mask ratio (fp16; read back in fp32)
    encoder.safetensors           the frozen image encoder, where the model config names one
    extent.safetensors            optional: the learned background bias of holes (model/extent.py)
    refiner.safetensors, refiner-second.safetensors   optional: the boundary refiner's passes

Loading checks the format version, each file's sha256, and the weights' keys and shapes, and says what is
wrong. `hf://ORG/REPO[@REVISION]` is fetched with huggingface_hub (its cache works offline)."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from ..classes import ClassSet
from ..errors import BankError
from ..files import write_atomic
from ..model.config import LMAEConfig
from ..model.encoder import build as build_encoder
from ..model.extent import ExtentBias
from ..model.lmae import LMAE
from ..model.refiner import BoundaryRefiner
from .manifest import MANIFEST, REFINER_PASSES, Finishing, Manifest


def _bundled_bank() -> Path:
    """The bank that ships with labelfix: inside the installed package, or in a source checkout's checkpoints/."""
    package = Path(__file__).resolve().parent.parent  # labelfix/
    installed = package / "checkpoints" / "voc"
    return installed if (installed / MANIFEST).exists() else package.parent / "checkpoints" / "voc"


DEFAULT_BANK = _bundled_bank()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ratio_key(ratio: float) -> str:
    return f"{float(ratio):.2f}"


def save_weights(model: torch.nn.Module, path: Path, half: bool = False) -> str:
    """Write a model's weights as safetensors atomically (with `half`, floats as fp16: a bank's models
    are read back in fp32, and fp16 halves what ships); returns the file's sha256."""
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    write_atomic(path, save(state))
    return sha256(path)


@dataclass
class Bank:
    """A loaded bank. Models are built lazily, one per ratio, on first use."""
    path: Path
    manifest: Manifest
    files: dict[float, Path]
    _models: dict = field(default_factory=dict, repr=False)
    _loading: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def config(self) -> LMAEConfig:
        return self.manifest.config

    @property
    def classes(self) -> ClassSet:
        return self.manifest.classes

    @property
    def ratios(self) -> list[float]:
        return sorted(self.files)

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256((self.path / MANIFEST).read_bytes()).hexdigest()

    def nearest_ratio(self, fraction: float) -> float:
        """The ratio whose value is nearest to a label's background fraction (ties: the smaller)."""
        return min(self.ratios, key=lambda r: (round(abs(r - fraction), 6), r))

    def finishing(self, mode: str) -> Finishing:
        """How repairs in a mode finish the model's output, as calibration measured it on validation data
        (Finishing; weight 0: the bank did not beat nearest-label fill on this kind of damage, and repair
        falls back to it)."""
        return self.manifest.finishing_of(mode)

    def encoder(self, device="cpu") -> torch.nn.Module | None:
        """The frozen image encoder on a device (channels-last: oneDNN runs it about twice as fast), or None
        for a model config without one."""
        if self.config.encoder == "none":
            return None
        key = ("encoder", str(device))
        with self._loading:
            if key not in self._models:
                self._models[key] = load_encoder(self.path / self.manifest.encoder["file"], self.config.encoder,
                                                 device)
            return self._models[key]

    def extent(self) -> ExtentBias | None:
        """The learned background bias of holes (model/extent.py), or None if the bank has none."""
        return self._optional_model("extent", "the background bias", lambda entry: ExtentBias(int(entry["hidden"])))

    def refiners(self, mode: str, bf16: bool = False) -> tuple[BoundaryRefiner, ...]:
        """The boundary refiner's passes (model/refiner.py) that help repairs in this mode, in order: the
        manifest's `refiner`, then `refiner_second`, each where its `modes` list the mode (the second only
        after the first, whose output it learned from). With `bf16`, their copies that multiply in bf16
        (BoundaryRefiner.in_bf16)."""
        out = []
        for key in REFINER_PASSES:
            if mode not in (getattr(self.manifest, key) or {}).get("modes", ()):
                break
            refiner = self._optional_model(key, "the boundary refiner",
                                           lambda entry: BoundaryRefiner(int(entry["hidden"])))
            if bf16:
                with self._loading:
                    if f"{key}-bf16" not in self._models:
                        self._models[f"{key}-bf16"] = refiner.in_bf16()
                    refiner = self._models[f"{key}-bf16"]
            out.append(refiner)
        return tuple(out)

    def _optional_model(self, key: str, what: str, build) -> torch.nn.Module | None:
        """The small model of the manifest's entry `key` ({file, ...}; `build(entry)` makes it), loaded
        once; None if the bank has no such entry."""
        entry = getattr(self.manifest, key)
        if not entry:
            return None
        with self._loading:
            if key not in self._models:
                model = build(entry)
                path = self.path / entry["file"]
                try:
                    model.load_state_dict(load_file(str(path)))
                except Exception as e:  # unreadable, or keys and shapes that do not fit the manifest
                    raise BankError(f"{path}: not {what} the manifest describes ({e})") from None
                self._models[key] = model.eval()
            return self._models[key]

    def model(self, ratio: float, device="cpu", bf16_weights: bool = False) -> LMAE:
        """The model of a ratio on a device. With `bf16_weights`, for bf16 autocast only: its linear and
        convolution layers hold bf16 weights, which autocast would otherwise cast on every call (the same
        numbers; 7% of the model's time on a CPU)."""
        key = (ratio, str(device), bf16_weights)
        with self._loading:  # repair's worker threads may ask for the same model at once
            if key not in self._models:
                model = load_model(self.files[ratio], self.config).to(device).eval()
                if bf16_weights:
                    for layer in model.modules():
                        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                            layer.to(torch.bfloat16)
                self._models[key] = model
            return self._models[key]


def load_model(path: Path, cfg: LMAEConfig) -> LMAE:
    model = LMAE(cfg)
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise BankError(f"{path}: not a readable safetensors file ({e})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BankError(f"{path}: weights do not fit the manifest's model config "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was the file replaced?")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise BankError(f"{path}: weight '{k}' has shape {tuple(state[k].shape)}, "
                            f"the manifest's config needs {tuple(v.shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model


def load_encoder(path: Path, name: str, device="cpu") -> torch.nn.Module:
    """The image encoder `name` with the weights of `path`, for inference on `device`."""
    encoder = build_encoder(name)
    try:
        encoder.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    except Exception as e:  # unreadable, or keys and shapes of another encoder
        raise BankError(f"{path}: not the weights of the image encoder {name} ({e})") from None
    return encoder.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)


def resolve_bank_path(spec: str | Path | None) -> Path:
    """A local folder, or hf://ORG/REPO[@REVISION] fetched through huggingface_hub."""
    if spec is None:
        return DEFAULT_BANK
    spec = str(spec)
    if spec.startswith("hf://"):
        repo = spec[len("hf://"):]
        repo, _, revision = repo.partition("@")
        if repo.count("/") != 1:
            raise BankError(f"{spec}: expected hf://ORG/REPO or hf://ORG/REPO@REVISION")
        try:
            from huggingface_hub import snapshot_download
            return Path(snapshot_download(repo_id=repo, revision=revision or None))
        except Exception as e:
            raise BankError(f"{spec}: cannot fetch the bank from the Hugging Face Hub ({type(e).__name__}: {e}); "
                            "check the name, your network, or set HF_HUB_OFFLINE=1 to use the local cache") from None
    return Path(spec)


def load_bank(spec: str | Path | None = None, verify: bool = True) -> Bank:
    folder = resolve_bank_path(spec)
    manifest = Manifest.read(folder)
    mpath, cfg = folder / MANIFEST, manifest.config
    if cfg.num_classes != manifest.classes.num_classes:
        raise BankError(f"{mpath}: model has {cfg.num_classes} classes but the class list has "
                        f"{manifest.classes.num_classes}")
    if not manifest.ratios:
        raise BankError(f"{mpath}: lists no models")
    files = {float(key): _checked_file(folder, entry, verify) for key, entry in manifest.ratios.items()}
    if cfg.encoder != "none" and not manifest.encoder:
        raise BankError(f"{mpath}: the model reads the image encoder {cfg.encoder}, but the manifest lists no "
                        "encoder file")
    for entry in manifest.weights_entries().values():
        _checked_file(folder, entry, verify)
    return Bank(folder, manifest, files)


def _checked_file(folder: Path, entry: dict, verify: bool) -> Path:
    """A weights file the manifest lists ({file, sha256}): present, and with that hash when `verify`."""
    f = folder / entry["file"]
    if not f.exists():
        raise BankError(f"{f}: listed in the manifest but missing")
    if verify and sha256(f) != entry["sha256"]:
        raise BankError(f"{f}: sha256 does not match the manifest; the file is damaged or was replaced")
    return f
