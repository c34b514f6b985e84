import numpy as np
import torch
from PIL import Image, ImageOps

from labelfix.data import find_image, open_dataset, read_image
from labelfix.repair.discover import guess_images_folder
from labelfix.train.samples import EpochTaggedSampler, TrainSamples


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


def test_fixed_views_repeat_every_v_epochs_and_fresh_crops_do_not(dataset):
    ds = open_dataset(dataset)
    pairs = ds.pairs("train")[:4]
    fixed = TrainSamples(pairs, ds.classes, 32, augment=True, seed=0, views=3)
    fresh = TrainSamples(pairs, ds.classes, 32, augment=True, seed=0)
    for i in range(4):
        assert torch.equal(fixed[(i, 1)][0], fixed[(i, 4)][0])  # epoch 4 is view 1 again
        assert fixed.crop(i, 1) == fresh.crop(i, 1)  # a view is the crop an epoch of that number draws
    assert any(not torch.equal(fresh[(i, 1)][0], fresh[(i, 4)][0]) for i in range(4))
    assert {fixed.crop(0, v) for v in range(3)} != {fixed.crop(0, 0)}
    assert TrainSamples(pairs, ds.classes, 32, augment=False).crop(0, 5) is None

def sideways_photo(path, orientation):
    """A 40 x 30 photo stored as taken, with an EXIF orientation saying how to show it upright."""
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:10, :20] = (250, 10, 10)  # a mark that tells the turn apart from a flip
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, quality=95)
    return stored


def test_a_sideways_photo_is_turned_upright_when_its_label_is(tmp_path):
    path = tmp_path / "portrait.jpg"
    sideways_photo(path, 6)  # shown turned 90 degrees: 30 wide, 40 high
    with Image.open(path) as im:
        upright = np.array(ImageOps.exif_transpose(im))
        stored = np.array(im)
    assert upright.shape == (40, 30, 3)
    assert np.array_equal(read_image(path, (40, 30)), upright)  # labelled as shown
    assert np.array_equal(read_image(path, (30, 40)), stored)  # labelled as stored
    assert np.array_equal(read_image(path), stored)


def test_a_photo_turned_half_way_keeps_its_stored_pixels(tmp_path):
    path = tmp_path / "upside_down.jpg"
    sideways_photo(path, 3)  # same shape either way: nothing says which way it was labelled
    with Image.open(path) as im:
        stored = np.array(im)
    assert np.array_equal(read_image(path, (30, 40)), stored)


def test_the_images_folder_is_found_where_common_layouts_keep_it(tmp_path):
    def layout(labels_at, images_at, image="a.jpg"):
        labels, images = tmp_path / labels_at, tmp_path / images_at
        labels.mkdir(parents=True, exist_ok=True)
        images.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(labels / "a.png")
        Image.new("RGB", (4, 4)).save(images / image)
        return labels, images

    for labels_at, images_at in [("voc/SegmentationClass", "voc/JPEGImages"), ("gen/labels", "gen/images"),
                                 ("ade/annotations/training", "ade/images/training"), ("mixed", "mixed")]:
        labels, images = layout(labels_at, images_at)
        assert guess_images_folder(labels) == images, labels_at
    labels, _ = layout("other/labels", "other/pictures")
    assert guess_images_folder(labels) is None
    labels, _ = layout("alone/labels", "alone/images", image="b.jpg")  # no image of its labels there
    assert guess_images_folder(labels) is None
    labels = tmp_path / "self"
    labels.mkdir()
    Image.new("L", (4, 4)).save(labels / "a.png")
    assert guess_images_folder(labels) is None  # a label is not its own image
    labels, images = tmp_path / "cs/gtFine/val/bonn", tmp_path / "cs/leftImg8bit/val/bonn"
    labels.mkdir(parents=True)
    images.mkdir(parents=True)
    Image.new("L", (4, 4)).save(labels / "bonn_000001_000019_gtFine_labelIds.png")
    Image.new("RGB", (4, 4)).save(images / "bonn_000001_000019_leftImg8bit.png")
    assert guess_images_folder(labels) == images


def test_a_label_pairs_with_its_image_under_the_names_datasets_give_them(tmp_path):
    for label_stem, image_name in [("a", "a.jpg"),
                                   ("bonn_000001_000019_gtFine_labelIds", "bonn_000001_000019_leftImg8bit.png"),
                                   ("bonn_000002_000019_gtCoarse_labelTrainIds", "bonn_000002_000019_leftImg8bit.png"),
                                   ("ISIC_0000000_segmentation", "ISIC_0000000.jpg"), ("car_01_mask", "car_01.jpg"),
                                   ("b_label", "b.png")]:
        Image.new("RGB", (4, 4)).save(tmp_path / image_name)
        assert find_image(tmp_path, label_stem) == tmp_path / image_name, label_stem
    Image.new("RGB", (4, 4)).save(tmp_path / "c.jpg")
    Image.new("RGB", (4, 4)).save(tmp_path / "c_mask.jpg")
    assert find_image(tmp_path, "c_mask") == tmp_path / "c_mask.jpg"  # its own stem first
    assert find_image(tmp_path, "d_mask") is None and find_image(tmp_path, "_mask") is None
