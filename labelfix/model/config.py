"""The model configuration: one frozen dataclass, saved as JSON in the bank manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class LMAEConfig:
    num_classes: int = 21          # K: label classes, background included, the ignore value not
    input_size: int = 224          # S: labels and images are resized to S x S for the model
    patch_size: int = 16           # p: the fused map is cut into (S/p)^2 patches
    enc_dim: int = 192             # encoder token width
    enc_depth: int = 4             # encoder blocks (run over visible patches only)
    enc_heads: int = 3             # encoder attention heads
    dec_dim: int = 128             # decoder token width
    dec_depth: int = 2             # decoder blocks (run over all patches)
    dec_heads: int = 4             # decoder attention heads
    mlp_ratio: float = 4.0         # hidden width of each block's MLP, as a multiple of its width
    drop_path: float = 0.0         # stochastic depth rate of the last block (linear ramp from 0)
    use_prior: bool = True         # feed a nearest-known-label prior to IPS and add it to the logits
    refine_dim: int = 32           # channels of the image-guided convolutional refinement; 0 = off
    prior_scale_init: float = 4.0  # initial logit weight of the prior (the untrained model = nearest fill)
    encoder: str = "none"          # frozen pretrained image encoder whose features the model reads (encoder.py
                                   # ENCODERS), or "none": raw RGB only, as the paper has it

    def __post_init__(self):
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size {self.input_size} is not a multiple of patch_size {self.patch_size}")
        if self.enc_dim % self.enc_heads or self.dec_dim % self.dec_heads:
            raise ValueError("enc_dim / dec_dim must be multiples of their head counts")
        if self.num_classes < 2:
            raise ValueError("num_classes must be at least 2")
        if self.encoder != "none" and self.input_size % (2 * self.patch_size):
            raise ValueError(f"with an encoder, input_size {self.input_size} must be a multiple of 2 x patch_size")

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.input_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def encoder_size(self) -> int:
        """The encoder's input side: its stride-16 feature map is the patch grid."""
        return 16 * self.grid

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LMAEConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


# Named presets. All but `paper` read the features of a pretrained image encoder (`tiny`'s is a random
# stand-in). `tiny` is for tests, `small` trains on a laptop CPU (112 px, 8 px patches: the paper's
# 14 x 14 grid at a quarter of the pixels, which trains ~4x faster than 224 px on a CPU), `medium` is `small` with a
# deeper, wider ViT for a GPU (7.2M parameters, ~1.5x the CPU inference time), `paper` is the paper's best
# setting (8 encoder / 6 decoder blocks, widths 1440 / 720; 1440 = 8 heads x 180).
PRESETS: dict[str, dict] = {
    "tiny": dict(input_size=64, patch_size=8, enc_dim=32, enc_depth=1, enc_heads=2,
                 dec_dim=32, dec_depth=1, dec_heads=2, refine_dim=8, encoder="stand-in"),
    "small": dict(input_size=112, patch_size=8, enc_dim=192, enc_depth=4, enc_heads=3,
                  dec_dim=128, dec_depth=2, dec_heads=4, refine_dim=32, encoder="efficientnet-lite0"),
    "medium": dict(input_size=112, patch_size=8, enc_dim=256, enc_depth=6, enc_heads=4,
                   dec_dim=192, dec_depth=3, dec_heads=4, refine_dim=32, drop_path=0.1, encoder="efficientnet-lite0"),
    "base": dict(input_size=224, patch_size=16, enc_dim=384, enc_depth=6, enc_heads=6,
                 dec_dim=256, dec_depth=4, dec_heads=8, refine_dim=48, encoder="efficientnet-lite0"),
    "paper": dict(input_size=224, patch_size=16, enc_dim=1440, enc_depth=8, enc_heads=8,
                  dec_dim=720, dec_depth=6, dec_heads=8, refine_dim=64, drop_path=0.1),
}


def preset(name: str, num_classes: int, **overrides) -> LMAEConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = LMAEConfig(num_classes=num_classes, **PRESETS[name])
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
