import csv
import json
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from conftest import COLOURS, run, tree_digest
from PIL import Image

from labelfix.classes import voc_palette
from labelfix.errors import UsageError
from labelfix.policy import ERASURE_MARGIN
from labelfix.repair.erasure import find_erasures
from labelfix.repair.events import FileDone
from labelfix.repair.report import merge_reports
from labelfix.repair.run import repair
from labelfix.repair.settings import RepairSettings


@pytest.fixture(params=[(False, 0.0), (True, 0.0), (True, 0.75)], ids=["plain", "guided", "guided+colour"])
def any_bank(request, bank, tmp_path_factory):
    """The session bank with each finishing forced on in every repair mode: none, the image-guided
    filter, the filter and the colour evidence."""
    guided, colour = request.param
    b = tmp_path_factory.mktemp("bank") / ("guided" if guided else "plain")
    shutil.copytree(bank, b, ignore=shutil.ignore_patterns("train-state", "base.safetensors"))
    man = json.loads((b / "manifest.json").read_text())
    man["guided_filter"] = {m: guided for m in ("missing", "replace", "blind")}
    man["colour_weight"] = {m: colour for m in ("missing", "replace", "blind")}
    man["correction_weight"] = {m: 1.0 for m in ("missing", "replace", "blind")}
    (b / "manifest.json").write_text(json.dumps(man))
    return b


def test_repairs_into_a_new_folder_and_leaves_inputs_alone(job, bank):
    labels, images = job
    before = tree_digest(labels.parent)
    res = run(labels, images, bank, preview=True)
    out = labels.parent / "labels-repaired"
    assert res.out.resolve() == out.resolve() and res.failed == 0
    after = {k: v for k, v in tree_digest(labels.parent).items() if not k.startswith("labels-repaired/")}
    assert after == before  # inputs byte-for-byte unchanged
    names = sorted(p.name for p in labels.iterdir())
    assert sorted(p.name for p in out.glob("*.png")) == names
    assert (out / "report.json").exists() and (out / "report.csv").exists() and (out / "preview.html").exists()
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files
    for n in names:
        a, b = Image.open(labels / n), Image.open(out / n)
        assert a.size == b.size and a.mode == b.mode


def test_fill_policy_changes_only_background_or_unlabelled_in_removed_patches(job, any_bank):
    labels, images = job
    res = run(labels, images, any_bank)
    for row in res.rows:
        old = np.array(Image.open(labels / row.file))
        new = np.array(Image.open(res.out / row.file))
        changed = old != new
        assert np.isin(old[changed], [0, 255]).all()
        assert row.pixels_changed == int(changed.sum())


def test_missing_fills_exactly_the_missing_pixels(job, any_bank):
    labels, images = job
    res = run(labels, images, any_bank, missing=(255,))
    for row in res.rows:
        old = np.array(Image.open(labels / row.file))
        new = np.array(Image.open(res.out / row.file))
        assert (new[old != 255] == old[old != 255]).all()  # nothing else changes
        assert (new[old == 255] != 255).all()  # every missing pixel is filled
        assert new.max() < 5


def test_blind_fill_finds_erased_blocks_and_fills_only_them(bank, tmp_path):
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        label = np.zeros((64, 64), np.uint8)
        label[12:52, 10:50] = 1 + i  # an outlined square object, VOC style
        image = COLOURS[label] + rng.integers(0, 20, (64, 64, 3), dtype=np.uint8)
        label[11:53, 9:51][[0, -1]] = 255
        label[11:53, 9:51][:, [0, -1]] = 255
        label[20:40, 4 + 10 * i:34 + 10 * i] = 0  # the erased block
        Image.fromarray(label, mode="L").save(labels / f"e{i}.png")
        Image.fromarray(image).save(images / f"e{i}.jpg", quality=95)
    res = run(labels, images, bank)
    margin, beside = round(ERASURE_MARGIN * 64), 0
    for row in res.rows:
        old = np.array(Image.open(labels / row.file))
        new = np.array(Image.open(res.out / row.file))
        refilled = (old == 0) & (new != old)
        shown = find_erasures(np.where(old == 255, -1, old.astype(np.int64)), 0)
        assert row.erased_pixels >= shown.sum() > 0 and refilled.any()
        beside += row.erased_pixels - shown.sum()
        objects = (old != 0) & (old != 255)
        assert (new[objects] == old[objects]).all()  # objects keep their labels
        assert (new[old == 255] != 255).all()  # the label's void outline is filled as in any blind repair
        assert refilled[20 - margin:40 + margin].sum() == refilled.sum() <= row.erased_pixels  # the block's rows
    assert beside > 0  # the background beside the blocks that reach past the object is decided with them
    off = run(labels, images, bank, find_erasures=False, out=tmp_path / "off")
    assert not any(row.erased_pixels for row in off.rows)


def outlined_object(tmp_path, labels_by_stem):
    """Folders of labels and images: a square object of class 2 outlined with 255 (VOC style) on a
    64 x 64 background; labels_by_stem maps each file stem to a function of that label."""
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    images.mkdir()
    label = np.zeros((64, 64), np.uint8)
    label[12:52, 10:50] = 2
    image = COLOURS[label]
    label[11:53, 9:51][[0, -1]] = 255
    label[11:53, 9:51][:, [0, -1]] = 255
    for stem, make in labels_by_stem.items():
        Image.fromarray(image).save(images / f"{stem}.jpg", quality=95)
        Image.fromarray(make(label.copy()).astype(np.uint8), mode="L").save(labels / f"{stem}.png")
    return labels, images


def test_an_erased_block_leaves_the_rest_of_the_label_to_blind_repair(bank, tmp_path, monkeypatch):
    from labelfix.repair import steps as repair_module

    def erased(label):
        label[20:40, 4:34] = 0
        return label

    labels, images = outlined_object(tmp_path, {"erased": erased})
    real = repair_module.finish_labels

    def sees_an_object_along_the_top(correction, label, hidden, allowed, image):
        pred, conf = real(correction, label, hidden, allowed, image)
        top = allowed & (label == 0) & (np.arange(label.shape[0]) < 6)[:, None]
        return np.where(top, 3, pred), np.where(top, 0.95, conf)

    monkeypatch.setattr(repair_module, "finish_labels", sees_an_object_along_the_top)
    row = run(labels, images, bank).rows[0]
    new = np.array(Image.open(labels.parent / "labels-repaired" / "erased.png"))
    assert row.erased_pixels > 0  # the block was found and repaired as missing ...
    assert (new[:6] == 3).any() and row.objects_filled > 0  # ... and the background far from it stayed suspect


def test_an_outline_around_background_sends_the_label_to_review(bank, tmp_path):
    labels, images = outlined_object(tmp_path, {
        "a": lambda label: label,  # outlined object
        "b": lambda label: np.where(label == 2, 0, label)})  # its class lost
    # review_below=0: only the outline test may send a label to review here, not the model's confidence
    rows = {row.file: row for row in run(labels, images, bank, review_below=0.0).rows}
    assert rows["a.png"].orphaned_outline < 0.3 and not rows["a.png"].needs_review
    assert rows["b.png"].orphaned_outline >= 0.3 and rows["b.png"].needs_review
    # the background inside the orphaned outline is decided as missing (and named where the model believes it)
    assert rows["a.png"].erased_pixels == 0 and rows["b.png"].erased_pixels >= 38 * 38
    assert "background on both sides" in rows["b.png"].review_reason and not rows["a.png"].review_reason
    told = run(labels, images, bank, missing=(255,), out=tmp_path / "told").rows
    assert all(row.orphaned_outline is None for row in told)  # with --missing the user said what is wrong


def with_hole(label):
    label[20:40, 20:40] = 255  # a wide hole besides the outline
    return label


def test_filling_an_outline_alone_does_not_send_a_label_to_review(bank, tmp_path):
    labels, images = outlined_object(tmp_path, {"outline": lambda label: label, "hole": with_hole})
    # review_below=1: any weighed change is unsure enough; the outline's fill is not weighed
    rows = {row.file: row for row in run(labels, images, bank, missing=(255,), review_below=1.0).rows}
    assert rows["outline.png"].pixels_changed > 0 and not rows["outline.png"].needs_review
    assert rows["hole.png"].needs_review


def test_objects_blind_repair_fills_in_background_are_counted_and_sent_to_review(job, bank, monkeypatch):
    from labelfix.repair import steps as repair_module

    labels, images = job
    real = repair_module.finish_labels

    def sees_a_green_square(correction, label, hidden, allowed, image):
        pred, conf = real(correction, label, hidden, allowed, image)
        square = allowed & (label == 0)
        return np.where(square, 2, pred), np.where(square, 0.95, conf)

    monkeypatch.setattr(repair_module, "finish_labels", sees_a_green_square)
    rows = run(labels, images, bank).rows
    filled = [r for r in rows if r.objects_filled]
    assert filled and all(r.needs_review and "with green: objects it lacked?" in r.review_reason for r in filled)
    assert all(r.objects_filled <= r.pixels_changed for r in rows)
    missing = run(labels, images, bank, missing=(255,), out=labels.parent / "missing").rows
    assert not any(r.objects_filled for r in missing)  # filling holes is not finding objects


def test_replace_policy_stays_inside_removed_patches(job, bank):
    from labelfix.bank.store import load_bank
    from labelfix.inference.prepare import prepare

    labels, images = job
    res = run(labels, images, bank, policy="replace", ratio=0.3)
    loaded, changed_pixels = load_bank(bank), 0
    for row in res.rows:
        assert row.patches_removed == round(0.3 * 64)
        before = np.array(Image.open(labels / row.file)).astype(np.int64)
        after = np.array(Image.open(res.out / row.file)).astype(np.int64)
        image = np.array(Image.open(images / row.file.replace(".png", ".jpg")).convert("RGB"))
        mi, _ = prepare(image, np.where(before == 255, -1, before), loaded, ratio=0.3, policy="replace")
        changed = before != after
        assert not (changed & ~mi.removed_full & (before != 255)).any()  # labelled pixels outside: kept
        changed_pixels += int(changed.sum())
    assert changed_pixels > 0


def test_min_confidence_one_changes_nothing(job, any_bank):
    labels, images = job
    res = run(labels, images, any_bank, missing=(255,), min_confidence=1.0)
    assert all(r.pixels_changed == 0 for r in res.rows)


def test_palette_png_keeps_mode_and_palette(dataset, bank, tmp_path):
    labels, images = tmp_path / "l", tmp_path / "i"
    labels.mkdir()
    images.mkdir()
    stem = (dataset / "splits" / "val.txt").read_text().split()[0]
    lab = np.array(Image.open(dataset / "labels" / f"{stem}.png"))
    im = Image.fromarray(lab, mode="P")
    im.putpalette(voc_palette())
    im.save(labels / f"{stem}.png")
    shutil.copy(dataset / "images" / f"{stem}.jpg", images)
    res = run(labels, images, bank, missing=(255,))
    out = Image.open(res.out / f"{stem}.png")
    assert out.mode == "P" and out.getpalette() == im.getpalette()


def test_a_photo_stored_sideways_is_repaired_against_its_upright_label(job, bank):
    labels, images = job
    stem = sorted(labels.iterdir())[0].stem
    upright = Image.open(images / f"{stem}.jpg")
    turned = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera stores a portrait photo
    exif = turned.getexif()
    exif[0x0112] = 6  # show it turned back
    turned.save(images / f"{stem}.jpg", exif=exif)
    assert turned.size[::-1] == upright.size != turned.size
    res = run(labels, images, bank, missing=(255,))
    assert res.failed == 0
    assert Image.open(res.out / f"{stem}.png").size == upright.size


def test_images_beside_their_labels_in_one_folder(job, bank, tmp_path):
    labels, images = job
    with pytest.raises(UsageError, match="--images is the labels folder, and it holds no images"):
        run(labels, labels, bank, out=tmp_path / "alone")  # never the label as its own image
    for jpg in images.iterdir():
        shutil.copy(jpg, labels)
    res = run(labels, labels, bank, missing=(255,), out=tmp_path / "beside")
    assert res.failed == 0 and len(res.rows) == 6  # the JPEGs are images, not bad labels
    assert sorted(p.name for p in (tmp_path / "beside").glob("*.png")) == sorted(p.name for p in labels.glob("*.png"))
    lonely = sorted(labels.glob("*.jpg"))[0]
    lonely.unlink()
    rows = {r.file: r for r in run(labels, labels, bank, missing=(255,), out=tmp_path / "beside", overwrite=True).rows}
    assert rows[f"{lonely.stem}.png"].status == "failed" and "no image named" in rows[f"{lonely.stem}.png"].error


def test_images_of_other_kinds_pair_with_their_labels(job, bank):
    labels, images = job
    jpgs = sorted(images.glob("*.jpg"))
    for jpg, ext in zip(jpgs, (".webp", ".tif", ".bmp")):
        Image.open(jpg).save(jpg.with_suffix(ext))
        jpg.unlink()
    res = run(labels, images, bank, missing=(255,))
    assert res.failed == 0 and len(res.rows) == 6


def test_a_cityscapes_folder_repairs_its_label_maps_against_their_leftimg8bit_images(job, bank, tmp_path):
    labels, images = job
    city_labels, city_images = tmp_path / "cs/gtFine/val/bonn", tmp_path / "cs/leftImg8bit/val/bonn"
    city_labels.mkdir(parents=True)
    city_images.mkdir(parents=True)
    stems = [p.stem for p in sorted(labels.iterdir())][:3]
    for i, stem in enumerate(stems):
        base = f"bonn_{i:06d}_000019"
        shutil.copy(labels / f"{stem}.png", city_labels / f"{base}_gtFine_labelTrainIds.png")
        Image.open(images / f"{stem}.jpg").save(city_images / f"{base}_leftImg8bit.png")
        Image.open(images / f"{stem}.jpg").save(city_labels / f"{base}_gtFine_color.png")  # colours: not a label
        Image.fromarray(np.full((8, 8), 26001, np.uint16)).save(city_labels / f"{base}_gtFine_instanceIds.png")
        (city_labels / f"{base}_gtFine_polygons.json").write_text("{}")
    res = run(city_labels, None, bank, missing=(255,))
    assert res.failed == 0 and len(res.rows) == 3
    assert sorted(p.name for p in res.out.glob("*.png")) == sorted(r.file for r in res.rows)
    assert all(r.file.endswith("_gtFine_labelTrainIds.png") for r in res.rows)


def test_recursive_repairs_a_tree_of_folders_into_the_same_tree(job, bank, tmp_path):
    labels, images = job
    tree, pictures = tmp_path / "cs/gtFine/val", tmp_path / "cs/leftImg8bit/val"
    stems = [p.stem for p in sorted(labels.iterdir())]
    for i, stem in enumerate(stems):
        city = ("bonn", "ulm")[i % 2]
        base = f"{city}_{i:06d}_000019"
        (tree / city).mkdir(parents=True, exist_ok=True)
        (pictures / city).mkdir(parents=True, exist_ok=True)
        shutil.copy(labels / f"{stem}.png", tree / city / f"{base}_gtFine_labelTrainIds.png")
        shutil.copy(images / f"{stem}.jpg", pictures / city / f"{base}_leftImg8bit.jpg")
    (tree / ".cache").mkdir()
    shutil.copy(labels / f"{stems[0]}.png", tree / ".cache" / "hidden.png")  # hidden: not a label
    shutil.copy(labels / f"{stems[0]}.png", tree / "ulm" / "no_image.png")
    with pytest.raises(UsageError, match="--recursive repairs theirs too"):
        run(tree, pictures, bank, missing=(255,))
    res = run(tree, None, bank, missing=(255,), recursive=True, preview=True)  # images found: leftImg8bit/val
    rows = {r.file: r for r in res.rows}
    assert len(rows) == len(stems) + 1 and rows["ulm/no_image.png"].status == "failed"
    assert str(pictures / "ulm") in rows["ulm/no_image.png"].error
    written = sorted(p.relative_to(res.out).as_posix() for p in res.out.rglob("*.png"))
    assert written == sorted(f for f, r in rows.items() if r.status != "failed")
    assert all(f.startswith(("bonn/", "ulm/")) for f in written)
    page = (res.out / "preview.html").read_text()
    assert all(f"src='preview/{f[:-4]}.after.jpg'" in page for f in written)
    assert all((res.out / "preview" / f"{f[:-4]}.after.jpg").exists() for f in written)
    victim = res.out / written[0]
    victim.unlink()
    (victim.parent / f".{victim.name}.k3j_x9zq.tmp").write_bytes(b"half")  # a run killed while writing it
    again = run(tree, pictures, bank, missing=(255,), recursive=True)
    assert {r.file: r.status for r in again.rows} == {r.file: r.status for r in res.rows}
    assert again.totals["resumed"] == len(written) - 1  # all but the victim, from the journal
    assert victim.exists() and not list(victim.parent.glob(".*.tmp"))
    seen = []
    for i in range(2):
        seen += [r.file for r in run(tree, pictures, bank, missing=(255,), recursive=True, shard=(i, 2),
                                     out=tmp_path / "sharded").rows]
    assert sorted(seen) == sorted(rows)


def test_bad_inputs_each_get_a_row_and_the_rest_is_repaired(job, bank, tmp_path):
    labels, images = job
    good = sorted(labels.iterdir())[0]
    (labels / "notes.dat").write_text("not a label")
    (labels / "truncated.png").write_bytes(good.read_bytes()[:60])
    Image.new("RGB", (40, 40), (255, 0, 0)).save(labels / "colour.png")
    lab = np.array(Image.open(good))
    Image.fromarray(lab, mode="L").save(labels / "no_image.png")
    Image.fromarray(np.full((40, 40), 9, np.uint8), mode="L").save(labels / "bad_values.png")
    shutil.copy(images / f"{good.stem}.jpg", images / "bad_values.jpg")
    Image.fromarray(lab[:, :-3], mode="L").save(labels / "wrong_size.png")
    shutil.copy(images / f"{good.stem}.jpg", images / "wrong_size.jpg")
    Image.fromarray(lab, mode="L").save(labels / "unreadable.png")
    shutil.copy(images / f"{good.stem}.jpg", images / "unreadable.jpg")
    (labels / "unreadable.png").chmod(0)
    res = run(labels, images, bank)
    rows = {r.file: r for r in res.rows}
    reasons = {
        "notes.dat": "not a PNG", "truncated.png": "not a readable PNG", "colour.png": "colour",
        "no_image.png": "no image named", "bad_values.png": "values [9]", "wrong_size.png": "but its label",
    }
    for name, reason in reasons.items():
        assert rows[name].status == "failed" and reason in rows[name].error, (name, rows[name].error)
    import os
    if os.geteuid() != 0:  # root can read a mode-000 file
        assert rows["unreadable.png"].status == "failed"
    assert sum(r.status == "repaired" or r.status == "unchanged" for r in res.rows) >= 6
    report = json.loads((res.out / "report.json").read_text())
    assert report["totals"]["failed"] == res.failed >= 6
    with open(res.out / "report.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert {r["file"] for r in csv_rows} == set(rows)
    assert set(csv_rows[0]) >= {"file", "background_fraction", "ratio", "patches_removed", "pixels_changed",
                                "classes_added", "mean_confidence", "needs_review", "review_reason", "seconds",
                                "error"}


def test_a_label_with_nothing_labelled_fails_and_a_mostly_unknown_one_goes_to_review(job, bank):
    labels, images = job
    good = sorted(labels.iterdir())[0]
    lab = np.array(Image.open(good))
    for name, values in {"never_labelled": np.full_like(lab, 255),
                         "mostly_missing": np.where(np.arange(lab.shape[0])[:, None] < lab.shape[0] // 5, lab, 255),
                         "a_third_missing": np.where(np.arange(lab.shape[0])[:, None] < lab.shape[0] // 3, 255, lab)
                         }.items():
        Image.fromarray(values.astype(np.uint8), mode="L").save(labels / f"{name}.png")
        shutil.copy(images / f"{good.stem}.jpg", images / f"{name}.jpg")
    for missing in ((255,), ()):  # given as missing, or unlabelled in blind repair
        # review_below 0: only how much of a label is unknown can send it to review here
        res = run(labels, images, bank, missing=missing, review_below=0.0, overwrite=True)
        rows = {r.file: r for r in res.rows}
        assert rows["never_labelled.png"].status == "failed"
        assert "no labelled pixel" in rows["never_labelled.png"].error
        assert not (res.out / "never_labelled.png").exists()
        assert rows["mostly_missing.png"].status == "repaired" and rows["mostly_missing.png"].needs_review
        assert rows["mostly_missing.png"].review_reason.endswith("unknown, more than the bank learned to complete")
        assert rows["a_third_missing.png"].status == "repaired" and not rows["a_third_missing.png"].needs_review
        assert res.failed == 1


def test_a_small_pixel_budget_takes_one_file_at_a_time_with_the_same_results(job, bank, monkeypatch):
    import labelfix.repair.pipeline as repair_module

    labels, images = job
    (labels / "broken.png").write_bytes(b"not a png")
    first = run(labels, images, bank, out=labels.parent / "all-at-once")
    taken, most = [], [0]
    prepare_one = repair_module.prepare_file

    def counting_prepare(path, *args):
        taken.append(path.name)
        most[0] = max(most[0], len(taken))
        return prepare_one(path, *args)

    def done(event):
        if isinstance(event, FileDone):
            taken.remove(event.row.file)

    monkeypatch.setattr(repair_module, "prepare_file", counting_prepare)
    monkeypatch.setattr(repair_module, "PIXELS_IN_FLIGHT", 1)
    second = repair(RepairSettings(labels=labels, images=images, bank=str(bank), device="cpu", batch_size=4,
                                   out=labels.parent / "one-at-a-time", classes="bank"), progress=done)
    assert most[0] == 1 and not taken
    assert [(r.file, r.status, r.pixels_changed) for r in first.rows] == \
        [(r.file, r.status, r.pixels_changed) for r in second.rows]
    assert {p.name: p.read_bytes() for p in first.out.glob("*.png")} == \
        {p.name: p.read_bytes() for p in second.out.glob("*.png")}


def test_resume_skips_finished_files_unless_overwrite(job, bank):
    labels, images = job
    first = run(labels, images, bank)
    victim = first.out / sorted(p.name for p in labels.iterdir())[0]
    stamp = victim.stat().st_mtime_ns
    victim2 = first.out / sorted(p.name for p in labels.iterdir())[1]
    victim2.unlink()  # as if interrupted before this file
    second = run(labels, images, bank)
    assert second.totals["resumed"] == len(first.rows) - 1
    assert victim.stat().st_mtime_ns == stamp and victim2.exists()
    third = run(labels, images, bank, overwrite=True)
    assert third.totals["resumed"] == 0 and victim.stat().st_mtime_ns != stamp


def test_a_rerun_clears_what_a_killed_run_left_half_written_of_the_files_it_writes(job, bank):
    labels, images = job
    names = sorted(p.name for p in labels.iterdir())
    first = run(labels, images, bank, shard=(0, 1))
    (first.out / names[0]).unlink()  # killed while writing this one, and the report
    stale = [first.out / f".{names[0]}.k3j_x9zq.tmp", first.out / ".report.shard-0-of-1.json.a1b2c3d4.tmp"]
    other = [first.out / f".{names[1]}.k3j_x9zq.tmp",  # finished: not this run's to write
             first.out / ".report.shard-1-of-2.json.a1b2c3d4.tmp"]  # another shard's
    for f in stale + other:
        f.write_bytes(b"half")
    run(labels, images, bank, shard=(0, 1))
    assert not any(f.exists() for f in stale) and all(f.exists() for f in other)
    assert (first.out / names[0]).exists()


def test_the_review_page_of_a_resumed_run_shows_every_label_drawn_and_the_failures(job, bank):
    labels, images = job
    first = sorted(p.name for p in labels.iterdir())
    odd = "a #1 & 'b'"  # a name a URL must escape
    shutil.copy(labels / first[0], labels / f"{odd}.png")
    shutil.copy(images / f"{Path(first[0]).stem}.jpg", images / f"{odd}.jpg")
    (labels / "broken.png").write_bytes(b"not a png")
    run(labels, images, bank, preview=True)
    (labels.parent / "labels-repaired" / first[1]).unlink()  # as if interrupted before this file
    res = run(labels, images, bank, preview=True)
    status = {r.file: r.status for r in res.rows}
    assert status[first[1]] in ("repaired", "unchanged") and status[first[0]] in ("repaired", "unchanged")
    assert res.totals["resumed"] == len(res.rows) - 2  # all but the deleted one and the broken one
    page = (res.out / "preview.html").read_text()
    drawn = [r for r in res.rows if r.status != "failed"]
    assert f"<p>{len(drawn)} images;" in page  # the resumed labels' pictures from the first run too
    for r in drawn:
        assert f"src='preview/{quote(Path(r.file).stem)}.after.jpg'" in page
        assert (res.out / "preview" / f"{Path(r.file).stem}.after.jpg").exists()
    assert "<h2>Failed</h2>" in page and "broken.png" in page
    assert page.count("loading='lazy'") == 2 * len(drawn)


def test_an_output_folder_labelfix_did_not_write_is_refused_and_left_alone(job, bank, tmp_path):
    labels, images = job
    other = tmp_path / "other-dataset-labels"  # --out mistyped: another dataset's labels, same names
    shutil.copytree(labels, other)
    before = tree_digest(other)
    for overwrite in (False, True):
        with pytest.raises(UsageError, match="that labelfix did not write"):
            run(labels, images, bank, out=other, overwrite=overwrite)
    assert tree_digest(other) == before
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UsageError, match="a file, not a folder"):
        run(labels, images, bank, out=tmp_path / "a-file")
    old = run(labels, images, bank, out=tmp_path / "older").out
    (old / ".labelfix-output").unlink()  # written by a labelfix from before the marker: its report says so
    assert run(labels, images, bank, out=old).rows
    (tmp_path / "empty").mkdir()
    assert run(labels, images, bank, out=tmp_path / "empty").failed == 0


def test_a_dry_run_writes_nothing_and_leaves_an_existing_output_folder_as_it_was(job, bank):
    labels, images = job
    res = run(labels, images, bank, dry_run=True)
    assert not res.out.exists() and res.report_path is None
    assert any(r.pixels_changed for r in res.rows)
    real = run(labels, images, bank, missing=(255,))
    before = tree_digest(real.out)
    again = run(labels, images, bank, missing=(255,), dry_run=True, overwrite=True)
    assert tree_digest(real.out) == before and again.totals["resumed"] == 0
    with pytest.raises(UsageError, match="--preview draws pictures"):
        run(labels, images, bank, dry_run=True, preview=True)


def test_shards_cover_every_file_once_and_merge(job, bank):
    labels, images = job
    seen = []
    for i in range(3):
        res = run(labels, images, bank, shard=(i, 3))
        seen += [r.file for r in res.rows]
    assert sorted(seen) == sorted(p.name for p in labels.iterdir())
    merged = json.loads(merge_reports(labels.parent / "labels-repaired").read_text())
    assert sorted(r["file"] for r in merged["rows"]) == sorted(seen)
    assert merged["totals"]["files"] == len(seen)


def test_the_last_shard_joins_the_reports_and_draws_one_review_page(job, bank):
    labels, images = job
    out = labels.parent / "labels-repaired"
    first = run(labels, images, bank, shard=(0, 2), preview=True)
    assert first.joined is None and not (out / "report.json").exists()
    assert not (out / "preview.html").exists()  # one shard's page would hide the other's
    last = run(labels, images, bank, shard=(1, 2), preview=True)
    assert last.joined == out / "report.json"
    joined = json.loads(last.joined.read_text())
    assert sorted(r["file"] for r in joined["rows"]) == sorted(p.name for p in labels.iterdir())
    assert f"<p>{len(list(labels.iterdir()))} images;" in (out / "preview.html").read_text()


def test_merging_keeps_each_file_s_newest_row_when_an_earlier_run_had_other_shards(job, bank):
    labels, images = job
    for i in range(3):  # changing nothing: every row 'unchanged'
        run(labels, images, bank, shard=(i, 3), min_confidence=1.0)
    for i in range(2):  # again in two shards: the three parts of the first run are still there
        second = run(labels, images, bank, shard=(i, 2), overwrite=True)
    joined = json.loads(second.joined.read_text())
    files = [r["file"] for r in joined["rows"]]
    assert sorted(files) == sorted(p.name for p in labels.iterdir())  # each once
    assert joined["totals"]["files"] == len(files) and joined["totals"]["repaired"] > 0  # the second run's rows


def test_usage_errors(job, bank, tmp_path):
    labels, images = job
    with pytest.raises(UsageError, match="inside the input folder"):
        run(labels, images, bank, out=labels / "sub")
    with pytest.raises(UsageError, match="a file; LABELS is the folder"):
        run(next(labels.iterdir()), images, bank)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no label files in the folder$"):
        run(empty, images, bank)
    (empty / "train").mkdir()
    with pytest.raises(UsageError, match="only 1 subfolder; --recursive repairs theirs too"):
        run(empty, images, bank)
    with pytest.raises(UsageError, match="no label files in the folder$"):  # nor in the subfolder
        run(empty, images, bank, recursive=True)
    with pytest.raises(UsageError, match=r"no .png label maps, but 6 images \(.jpg\): are LABELS and --images"):
        run(images, labels, bank, out=tmp_path / "swapped")
    assert not (tmp_path / "swapped").exists()
    (empty / "notes.dat").write_text("not a label")
    with pytest.raises(UsageError, match="no .png label maps among its 1 file$"):
        run(empty, images, bank)
    with pytest.raises(UsageError, match="labels folder not found"):
        run(tmp_path / "nope", images, bank)
    with pytest.raises(UsageError, match="--policy"):
        run(labels, images, bank, policy="paint")


def test_cityscapes_label_ids_map_to_train_ids_and_back():
    from labelfix.classes import cityscapes_to_train_ids, train_ids_to_cityscapes
    ids = np.array([[7, 8, 26, 0, 33, 9]])
    train = cityscapes_to_train_ids(ids)
    assert train.tolist() == [[0, 1, 13, 255, 18, 255]]
    assert train_ids_to_cityscapes(np.array([0, 13, 18])).tolist() == [7, 26, 33]
