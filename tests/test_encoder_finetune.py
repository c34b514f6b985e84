"""The encoder fine-tuning benchmark's tuned part (benchmarks/encoder_finetune.py)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from encoder_finetune import TunedPart, first_tuned_block, trunk  # noqa: E402

from labelfix.model.encoder import ImageEncoder  # noqa: E402


def test_the_tuned_part_continues_the_encoder_where_its_trunk_stops():
    torch.manual_seed(0)
    encoder = ImageEncoder("efficientnet-lite0").eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        _, f16, f32 = encoder(image)
        # stride32: the blocks after the stride-16 map; stride16: from the first block of its stage (the 5th,
        # Lite0's blocks 8-10: 112 channels)
        for tune, first in (("stride32", max(encoder.taps) + 1), ("stride16", 8)):
            assert first_tuned_block(encoder, tune) == first
            g16, g32 = TunedPart(encoder, first)(trunk(encoder, image, first))
            assert torch.allclose(g16, f16, atol=1e-5) and torch.allclose(g32, f32, atol=1e-5)
