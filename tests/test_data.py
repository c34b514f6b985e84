import torch

from labelfix.data import EpochTaggedSampler, TrainSamples, open_dataset


def test_crops_change_with_the_epoch_tag_even_in_persistent_workers(dataset):
    ds = open_dataset(dataset)
    samples = TrainSamples(ds.pairs("train")[:4], ds.classes, 32, augment=True, seed=0)
    a, b = samples[(0, 1)][1], samples[(0, 2)][1]
    assert torch.equal(samples[(0, 1)][1], a)  # a function of (seed, epoch, index)
    assert not torch.equal(a, b)

    sampler = EpochTaggedSampler(torch.utils.data.SequentialSampler(samples))
    loader = torch.utils.data.DataLoader(samples, batch_size=4, sampler=sampler, num_workers=1,
                                         persistent_workers=True)
    epochs = []
    for e in (1, 2):
        sampler.set_epoch(e)
        epochs.append(next(iter(loader))[1])
    assert torch.equal(epochs[0][0], a) and torch.equal(epochs[1][0], b)


def test_copy_paste_brings_another_samples_objects_and_keeps_the_default_crops(dataset):
    ds = open_dataset(dataset)
    pairs = ds.pairs("train")[:6]
    plain = TrainSamples(pairs, ds.classes, 32, augment=True, seed=0)
    pasted = TrainSamples(pairs, ds.classes, 32, augment=True, seed=0, copy_paste=1.0)
    off = TrainSamples(pairs, ds.classes, 32, augment=True, seed=0, copy_paste=0.0)
    changed = 0
    for key in [(i, e) for i in range(6) for e in range(3)]:
        (img_a, lab_a), (img_b, lab_b) = plain[key], pasted[key]
        assert torch.equal(off[key][1], lab_a)  # copy-paste off draws exactly the plain crops
        pasted_px = (lab_a != lab_b) | (img_a != img_b).any(0)
        changed += int(pasted_px.any())
        # pasted pixels are objects or their void outline, never background
        assert ((lab_b[pasted_px] >= 1) | (lab_b[pasted_px] == -1)).all()
    assert changed > 0
