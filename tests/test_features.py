import os

import torch

from labelfix.data import open_dataset
from labelfix.model.encoder import ImageEncoder
from labelfix.train import features
from labelfix.train.samples import TrainSamples


def test_features_are_computed_once_cached_and_computed_again_when_a_file_changes(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELFIX_CACHE", str(tmp_path / "cache"))
    ds = open_dataset(dataset)
    encoder = ImageEncoder("stand-in").eval()
    samples = TrainSamples(ds.pairs("train")[:3], ds.classes, 32, augment=True, seed=0, views=2)
    calls = []
    real = features.compute
    monkeypatch.setattr(features, "compute", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = features.attach(samples, encoder, "sha", 64)
    f8, f16, f32 = samples[(1, 3)][2:]  # image 1, view 1
    with torch.no_grad():
        expected = encoder(features.view_image(samples, 1, 1, 64)[None])
    assert torch.allclose(f16.float(), expected[1][0], atol=1e-2) and f32.shape == expected[2][0].shape
    assert path.parent == tmp_path / "cache" / "features" and len(calls) == 1
    again = TrainSamples(ds.pairs("train")[:3], ds.classes, 32, augment=True, seed=0, views=2)
    assert features.attach(again, encoder, "sha", 64) == path and len(calls) == 1  # from the cache
    assert features.attach(again, encoder, "another encoder", 64) != path and len(calls) == 2
    image = ds.pairs("train")[0][0]
    os.utime(image, ns=(1, 1))  # the image was replaced
    assert features.attach(again, encoder, "sha", 64) != path and len(calls) == 3
