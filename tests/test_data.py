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
