import torch
import torch.nn.functional as F

from labelfix.predict import upsample_at


def test_upsample_at_equals_full_bilinear_upsampling_at_the_chosen_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 14, 14, generator=g)
    where = torch.rand(75, 100, generator=g) < 0.3
    full = F.interpolate(logits[None], size=(75, 100), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(upsample_at(logits, (75, 100), where), full[:, where], atol=1e-5)
