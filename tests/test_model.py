import pytest
import torch

from labelfix.model.config import PRESETS, LMAEConfig, preset
from labelfix.model.encoder import ImageEncoder
from labelfix.model.lmae import LMAE
from labelfix.model.loss import weighted_cross_entropy
from labelfix.model.masking import background_first_mask, background_pixels, patch_mean
from labelfix.model.propagate import nearest_fill


def batch(cfg, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = cfg.input_size
    image = torch.rand(B, 3, S, S, generator=g)
    label = torch.randint(0, cfg.num_classes, (B, S, S), generator=g)
    removed = background_first_mask(patch_mean(background_pixels(label, 0), cfg.patch_size), 0.5)
    return image, label, removed


def features(cfg, image):
    """The image encoder's maps of the images (a random encoder of the config's form), or None."""
    if cfg.encoder == "none":
        return None
    torch.manual_seed(0)
    small = torch.nn.functional.interpolate(image, size=(cfg.encoder_size,) * 2, mode="bilinear")
    return [f.detach() for f in ImageEncoder(cfg.encoder)(small)]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "paper" else n for n in PRESETS])
def test_every_preset_forward_backward(name):
    small = dict(input_size=32, patch_size=16) if name != "tiny" else {}
    # no stochastic depth here: with 2 samples it can drop a block for both, and no gradient reaches it
    cfg = preset(name, 5, drop_path=0.0, **small)
    model = LMAE(cfg)
    image, label, removed = batch(cfg)
    logits = model(image, label, removed, features=features(cfg, image))
    assert logits.shape == (2, 5, cfg.input_size, cfg.input_size)
    loss = weighted_cross_entropy(logits, label, torch.ones(5))
    loss.backward()
    assert torch.isfinite(loss)
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, f"no gradient reaches {n}"


def test_paper_preset_has_paper_sizes():
    cfg = preset("paper", 21)
    assert (cfg.enc_depth, cfg.dec_depth, cfg.enc_dim, cfg.dec_dim, cfg.patch_size,
            cfg.input_size) == (8, 6, 1440, 720, 16, 224)


def test_untrained_model_equals_nearest_fill():
    cfg = preset("tiny", 4)
    model = LMAE(cfg).eval()
    image, label, removed = batch(cfg, B=3)
    from labelfix.model.masking import expand_mask
    px = expand_mask(removed, cfg.grid, cfg.patch_size)
    label_in = torch.where(px, torch.full_like(label, -1), label)
    with torch.no_grad():
        pred = model(image, label_in, removed, features=features(cfg, image)).argmax(1)
    assert torch.equal(pred, nearest_fill(label_in))


def test_variable_removed_counts_and_all_removed():
    cfg = preset("tiny", 3)
    model = LMAE(cfg).eval()
    image, label, _ = batch(cfg, B=3)
    removed = torch.zeros(3, cfg.num_patches, dtype=torch.bool)
    removed[1, :5] = True
    removed[2] = True  # nothing visible: the encoder still has its class token
    with torch.no_grad():
        out = model(image, label, removed, features=features(cfg, image))
    assert torch.isfinite(out).all()


def test_visible_patch_padding_does_not_leak():
    """A sample's output must not depend on which other samples share its batch."""
    cfg = preset("tiny", 3)
    model = LMAE(cfg).eval()
    image, label, _ = batch(cfg, B=2)
    removed = torch.zeros(2, cfg.num_patches, dtype=torch.bool)
    removed[0, :10] = True
    removed[1, :40] = True
    with torch.no_grad():
        both = model(image, label, removed, features=features(cfg, image))
        alone = model(image[1:], label[1:], removed[1:], features=features(cfg, image[1:]))
    assert torch.allclose(both[1], alone[0], atol=1e-5)


def test_config_checks_and_round_trip():
    with pytest.raises(ValueError):
        LMAEConfig(input_size=30, patch_size=16)
    cfg = preset("small", 11)
    assert LMAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        preset("huge", 3)


def test_patch_embedding_by_convolution_is_the_linear_layer_on_patchified_input():
    from labelfix.model.fuse import patchify

    torch.manual_seed(0)
    cfg = preset("tiny", num_classes=5)
    model = LMAE(cfg)
    x = torch.randn(2, 5 + 3, cfg.input_size, cfg.input_size)
    expected = model.patch_embed(patchify(x, cfg.patch_size))
    assert torch.allclose(model.embed_patches(model.patch_embed, x), expected, atol=1e-5)
