import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labelfix.bank.manifest import Finishing
from labelfix.device import resolve_precision
from labelfix.errors import UsageError
from labelfix.inference.correction import Correction
from labelfix.inference.finish import classes_that_can_win, finish_labels, name_lost_objects, nearest_known_label
from labelfix.inference.guided import ImageGuide, pixel_grid, sample_at
from labelfix.model.propagate import nearest_fill, nearest_seed
from labelfix.policy import NAME_LOST_OBJECT_BELIEF, OVERTURN_CONFIDENCE
from labelfix.train.damage import random_blocks


def holes(shape, seed, coverage=0.3):
    return random_blocks(1, *shape, coverage, torch.Generator().manual_seed(seed))[0].numpy()


def first_val_label_with_holes(bank_dir, dataset):
    """(loaded bank, model input) of the test dataset's first val label with blocks made missing."""
    from labelfix.bank.store import load_bank
    from labelfix.data import load_pair, open_dataset
    from labelfix.inference.prepare import prepare

    b = load_bank(bank_dir)
    image, label = load_pair(*open_dataset(dataset).pairs("val")[0], b.classes)
    damaged = np.where(holes(label.shape, 0), -1, label)
    return b, prepare(image, damaged, b, missing=damaged < 0)[0]


@pytest.mark.parametrize("seed", range(4))
def test_classes_that_can_win_keeps_every_class_that_wins_after_upsampling(seed):
    g = torch.Generator().manual_seed(seed)
    # few classes strong, the rest weak: the filter must drop some and keep every winner
    logits = torch.randn(12, 14, 14, generator=g)
    logits[:3] += 4 * torch.rand(3, 14, 14, generator=g)
    logits[3:6] -= 6  # never near the top
    where = torch.rand(90, 120, generator=g) < 0.4
    grid = pixel_grid(where)
    winners = set(sample_at(logits, grid).argmax(0).unique().tolist())
    kept = classes_that_can_win(logits, grid)
    assert winners <= set(torch.nonzero(kept)[:, 0].tolist())
    assert not kept[3:6].any()


def reference_finish(correction, label, hidden, allowed):
    """finish_labels without the guided filter, written the slow way: all classes upsampled."""
    H, W = label.shape
    full = F.interpolate(correction.logits[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    known = torch.from_numpy(np.where(hidden, -1, label))[None]
    nearest = nearest_fill(known)[0]
    full = full + correction.prior_weight * F.one_hot(nearest, full.shape[0]).permute(2, 0, 1)
    probs = full.softmax(0)
    conf, pred = probs.max(0)
    return np.where(allowed, pred.numpy(), label), np.where(allowed, conf.numpy(), 1.0)


@pytest.mark.parametrize("seed", range(3))
def test_finish_with_the_classes_in_play_equals_the_full_softmax(seed):
    H, W, K = 60, 80, 9
    label = np.zeros((H, W), np.int64)
    label[10:40, 20:60] = 3
    label[30:55, 5:30] = 5
    hidden = holes((H, W), seed)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(K, 16, 16, generator=g)
    logits[3] += 2.0
    correction = Correction(logits, prior_weight=2.5, reach=16.0)
    pred, conf = finish_labels(correction, np.where(hidden, -1, label), hidden, hidden)
    ref_pred, ref_conf = reference_finish(correction, np.where(hidden, -1, label), hidden, hidden)
    assert (pred != ref_pred).sum() <= 2  # ties between equally near known pixels may go either way
    same = pred == ref_pred
    # the classes out of play enter the softmax as one upsampled log-sum-exp: confidence is nearly exact
    assert np.abs(conf[same] - ref_conf[same]).max() < 0.02
    assert (pred[~hidden] == label[~hidden]).all() and (conf[~hidden] == 1).all()


def distance_to(known: np.ndarray) -> np.ndarray:
    """(H, W) distance of every pixel to the nearest pixel of `known`."""
    seed = nearest_seed(torch.from_numpy(known)[None])[0].numpy()
    H, W = known.shape
    return np.hypot(seed[..., 0] - np.arange(H)[:, None], seed[..., 1] - np.arange(W)[None])


def test_nearest_known_label_at_half_size_is_within_a_pixel_or_two_of_the_exact_one():
    H, W = 300, 420
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (H // 30, W // 30)).repeat(30, 0).repeat(30, 1)
    label[100:103, :] = 7  # a thin known line survives the half-size search
    hidden = holes((H, W), 1, 0.4)
    hidden[100:103, :] = False
    got = nearest_known_label(label, hidden, bound=H + W).numpy()
    assert (got[~hidden] == label[~hidden]).all()  # known pixels keep their label
    # how much farther than the nearest known pixel is the nearest one of the label given?
    nearest = distance_to(~hidden)
    farther = np.zeros((H, W))
    for c in np.unique(label):
        farther = np.where(got == c, distance_to(~hidden & (label == c)) - nearest, farther)
    farther = farther[hidden]
    assert (farther > 0.01).mean() < 0.03  # a near tie settled the other way
    assert (farther <= 2.5).mean() > 0.999 and farther.max() <= 4.0
    small = nearest_known_label(label[:200, :200], hidden[:200, :200], bound=400).numpy()
    exact_small = nearest_fill(torch.from_numpy(np.where(hidden[:200, :200], -1, label[:200, :200]))[None])[0]
    assert (small == exact_small.numpy()).mean() > 0.999  # small images: searched at full size


def test_shrink_sparse_equals_shrinking_the_assembled_map():
    g = torch.Generator().manual_seed(0)
    H, W, C = 70, 90, 3
    image = torch.rand(3, H, W, generator=g)
    where = torch.rand(H, W, generator=g) < 0.3
    guide = ImageGuide(image, where, work_side=32)
    maps = torch.rand(C, H, W, generator=g)
    outside = maps.clone()
    outside[:, where] = 0
    base = guide.shrink(outside).flatten(1).t() * guide.area[:, None]  # per-cell sums outside `where`
    values = maps[:, where].t()  # (N, C)
    assert torch.allclose(guide.shrink_sparse(base, values), guide.shrink(maps), atol=1e-5)
    assert torch.allclose(guide.filter_small(guide.shrink(maps)), guide.filter(maps))


def test_precision_choice(monkeypatch):
    # even a CPU that does bf16 in hardware runs fp32 unless asked: bf16 cost quality there
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: True, raising=False)
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(UsageError, match="--precision"):
        resolve_precision("fp8", cpu)


def test_bf16_weights_give_the_numbers_autocast_gives(bank, dataset):
    from labelfix.bank.store import Bank, load_bank
    from labelfix.inference.run import run_model

    fast, mi = first_val_label_with_holes(bank, dataset)
    with_bf16_weights, = run_model(fast, [mi], "cpu", calibrated=False, precision="bf16")
    assert fast.model(mi.ratio, "cpu", bf16_weights=True).head.weight.dtype == torch.bfloat16
    plain = load_bank(bank)
    plain.model = lambda ratio, device, bf16_weights=False: Bank.model(plain, ratio, device)  # autocast casts
    cast_per_call, = run_model(plain, [mi], "cpu", calibrated=False, precision="bf16")
    assert torch.equal(with_bf16_weights.logits, cast_per_call.logits)
    fp32, = run_model(fast, [mi], "cpu", calibrated=False, precision="fp32")
    assert fast.model(mi.ratio, "cpu").head.weight.dtype == torch.float32  # fp32 runs keep their own copy
    assert not torch.equal(fp32.logits, with_bf16_weights.logits)


def test_background_bias_takes_back_what_the_prior_carried_into_a_hole():
    # class 1 on the left, background on the right, a hole across the edge: nearest-label fill takes
    # class 1 to the hole's middle; a background bias larger than the prior's weight gives it back
    H, W = 16, 32
    label = np.where(np.arange(W)[None] < 12, 1, 0).repeat(H, 0)
    hidden = np.zeros((H, W), bool)
    hidden[:, 8:24] = True
    plain = Correction(torch.zeros(2, 4, 4), prior_weight=1.0, reach=2.0, background=0)
    before, _ = finish_labels(plain, label, hidden, hidden)
    after, _ = finish_labels(plain.scaled(Finishing(1.0, background_bias=2.0)), label, hidden, hidden)
    assert (before[:, 12:16] == 1).all()
    assert (after[hidden] == 0).all() and (after[~hidden] == label[~hidden]).all()
    assert plain.scaled(Finishing(1.0, background_bias=2.0)).final_logits()[0].eq(2.0).all()
    assert plain.final_logits() is plain.logits  # no bias: no copy


def test_blind_fill_overturns_a_labelled_pixel_only_when_the_model_is_sure():
    # background everywhere, allowed but known (blind fill's suspect background); of three classes the model
    # leans to class 1 by a margin that gives it about 0.38 on the left half and 0.82 on the right
    H, W = 8, 16
    label = np.zeros((H, W), np.int64)
    hidden = np.zeros((H, W), bool)
    allowed = np.ones((H, W), bool)
    logits = torch.zeros(3, 4, 4)
    logits[1, :, :2], logits[1, :, 2:] = 0.2, 2.2
    assert 0.38 < OVERTURN_CONFIDENCE < 0.82
    pred, conf = finish_labels(Correction(logits, prior_weight=0.0, reach=1.0), label, hidden, allowed)
    sure = conf >= OVERTURN_CONFIDENCE
    assert sure.any() and (~sure).any()
    assert (pred[sure] == 1).all() and (pred[~sure] == 0).all()
    # the same pixels declared missing (hidden) take the model's class however unsure it is
    pred, _ = finish_labels(Correction(logits, prior_weight=0.0, reach=1.0), label, allowed, allowed)
    assert (pred == 1).all()


def test_a_lost_object_takes_the_likeliest_object_class_where_the_model_believes_in_an_object():
    # two lost objects: on the left the model spreads 0.65 over objects (class 2 ahead of 1) though background
    # is each pixel's likeliest class; on the right it believes in background
    assert NAME_LOST_OBJECT_BELIEF < 0.65
    probs = torch.empty(3, 4, 4)
    probs[:, :, :2] = torch.tensor([0.35, 0.32, 0.33])[:, None, None]
    probs[:, :, 2:] = torch.tensor([0.8, 0.1, 0.1])[:, None, None]
    correction = Correction(probs.log(), prior_weight=0.0, reach=1.0, background=0)
    pred, conf = np.zeros((8, 16), np.int64), np.ones((8, 16), np.float32)
    lost = np.zeros((8, 16), bool)
    lost[:, :6] = lost[:, 10:] = True
    name_lost_objects(correction, pred, conf, lost)
    assert (pred[:, :6] == 2).all() and np.allclose(conf[:, :6], 0.33, atol=1e-3)
    assert (pred[:, 6:] == 0).all() and (conf[:, 6:] == 1).all()


def test_block_size_keeps_the_finishing_grid_at_most_512_pixels():
    from labelfix.inference.finish import BLOCKS_ABOVE, block_size

    assert BLOCKS_ABOVE < 500 and block_size((375, 500)) == 2   # VOC's own size
    assert block_size((768, 1024)) == 2 and block_size((1024, 2048)) == 4 and block_size((3000, 4000)) == 8


def test_block_labels_and_repeat_blocks_agree_with_a_plain_loop():
    from labelfix.inference.finish import _repeat_blocks, block_labels

    rng = np.random.default_rng(0)
    known = torch.from_numpy(np.where(rng.random((23, 17)) < 0.5, -1, rng.integers(0, 5, (23, 17))))
    for f in (2, 3, 4):
        got = block_labels(known, f)
        assert got.shape == (-(-23 // f), -(-17 // f))
        for i in range(got.shape[0]):
            for j in range(got.shape[1]):
                block = known[i * f:(i + 1) * f, j * f:(j + 1) * f]
                want = block[0, 0] if block[0, 0] >= 0 else block.max()
                assert got[i, j] == want
        up = _repeat_blocks(got, f, (23, 17))
        assert np.array_equal(up.numpy(), got.numpy().repeat(f, 0).repeat(f, 1)[:23, :17])


@pytest.mark.parametrize("f", [2, 3])
def test_large_labels_are_finished_on_blocks(f):
    from labelfix.inference.finish import BLOCKS_ABOVE, _finish_full, _finish_on_blocks, block_size

    # class 1 left of column 201, background right of it; a hole across the edge; the image shows the edge
    H, W = (401, 451) if f == 2 else (700, 1100)
    assert max(H, W) > BLOCKS_ABOVE and block_size((H, W)) == f
    label = np.where(np.arange(W)[None] < 201, 1, 0).repeat(H, 0)
    hole = np.zeros((H, W), bool)
    hole[100:301, 151:261] = True
    image = np.where(label[..., None] == 1, 200, 30).astype(np.uint8).repeat(3, 2)
    correction = Correction(torch.zeros(2, 8, 8), prior_weight=1.0, reach=3.0, background=0, guided=True)
    pred, conf = finish_labels(correction, label, hole, hole, image)
    small, small_conf = _finish_on_blocks(correction, label, hole, hole, image, f)
    assert np.array_equal(pred, small) and np.array_equal(conf, small_conf)  # the large label took the blocks
    assert np.array_equal(pred[~hole], label[~hole]) and (conf[~hole] == 1).all()
    full, _ = _finish_full(correction, label, hole, hole, image)
    assert np.array_equal(full, label)                    # the edge is where the image says
    assert (pred != full).sum() <= (f - 1) * hole.shape[0]  # on blocks: at most a block's width off
    # blind fill (labelled pixels may change) on blocks too: a labelled pixel changes only where sure
    blind = hole.copy()
    blind[:, 300:320] = True
    wide, wide_conf = finish_labels(correction, label, hole, blind, image)
    assert np.array_equal(wide[~blind], label[~blind])
    labelled = blind & ~hole
    assert ((wide[labelled] == label[labelled]) | (wide_conf[labelled] >= OVERTURN_CONFIDENCE)).all()


def test_blind_fill_on_blocks_keeps_each_labelled_pixel_where_unsure():
    # a checkerboard of two labelled classes, all of it open to blind fill, and a model with no opinion (of 3):
    # every block is unsure, so every pixel keeps its own label, not its block's
    H, W = 401, 451
    label = (np.add.outer(np.arange(H), np.arange(W)) % 2).astype(np.int64)
    allowed, hidden = np.ones((H, W), bool), np.zeros((H, W), bool)
    pred, conf = finish_labels(Correction(torch.zeros(3, 8, 8), prior_weight=0.0, reach=1.0), label, hidden, allowed)
    assert (conf < OVERTURN_CONFIDENCE).all() and np.array_equal(pred, label)


def test_to_original_size_is_torchs_nearest_resize():
    from labelfix.inference.prepare import to_original_size

    rng = np.random.default_rng(0)
    for H, W in [(375, 500), (3000, 4000), (112, 112), (224, 224), (113, 97), (50, 70)] + \
            [tuple(v) for v in rng.integers(20, 3000, (20, 2))]:
        small = torch.from_numpy(rng.random((112, 112)) < 0.5)
        want = F.interpolate(small[None, None].float(), size=(int(H), int(W)), mode="nearest")[0, 0] > 0.5
        assert np.array_equal(to_original_size(small, (int(H), int(W))), want.numpy()), (H, W)


def test_a_label_s_correction_does_not_depend_on_the_labels_it_shares_a_batch_with(bank, dataset):
    from labelfix.bank.store import load_bank
    from labelfix.data import load_pair, open_dataset
    from labelfix.inference.prepare import prepare
    from labelfix.inference.run import run_model

    b = load_bank(bank)
    items = []
    for i, pair in enumerate(open_dataset(dataset).pairs("val")):
        image, label = load_pair(*pair, b.classes)
        damaged = np.where(holes(label.shape, i), -1, label)
        items.append(prepare(image, damaged, b, missing=damaged < 0, ratio=0.5)[0])  # one model, many shapes
    together = run_model(b, items, "cpu", calibrated=False, precision="fp32")
    for item, batched in zip(items, together):
        alone, = run_model(b, [item], "cpu", calibrated=False, precision="fp32")
        assert torch.equal(alone.logits, batched.logits)


def test_every_model_of_the_bank_reads_a_label_and_their_logits_are_averaged(bank, dataset):
    from labelfix.inference.run import encode, run_model

    b, mi = first_val_label_with_holes(bank, dataset)
    got, = run_model(b, [mi], "cpu", calibrated=False, precision="fp32")
    x = [t[None] for t in (mi.image, mi.label_in, mi.removed, mi.editable)]
    nearest = nearest_fill(x[1], with_distance=True, mend=False)
    with torch.no_grad():
        features = encode(b, [mi], "cpu")
        each = [b.model(r, "cpu")(*x, nearest=nearest, without_prior=True, features=features)[0] for r in b.ratios]
    assert len(each) == 3 and not torch.allclose(each[0], each[1])  # the models differ: the mean is not any one
    torch.testing.assert_close(got.logits, torch.stack(each).mean(0), rtol=1e-5, atol=1e-5)
    assert got.prior_weight == pytest.approx(np.mean([b.model(r, "cpu").prior_scale.item() for r in b.ratios]))
