"""What `repair` guarantees whatever happens: inputs never written, atomic and durable outputs, one run per
output folder, a resumed run's report equal to one run's, the same bytes however the work is split."""

import csv
import errno
import os
import stat
import threading

import numpy as np
import pytest
from conftest import run, tree_digest
from PIL import Image

from labelfix import api
from labelfix.errors import BankError, UsageError
from labelfix.files import OutputError
from labelfix.repair import steps as repair_module
from labelfix.repair.events import FileDone, Note
from labelfix.repair.outfolder import OutputLock


def _rows(result):
    return [{k: v for k, v in r.__dict__.items() if k != "seconds"} for r in result.rows]


def test_a_killed_run_s_resumed_report_equals_an_uninterrupted_run_s(job, bank, tmp_path):
    labels, images = job
    whole = run(labels, images, bank, missing=(255,), out=tmp_path / "whole")
    seen = []

    def kill_after_three(e):
        if isinstance(e, FileDone):
            seen.append(e)
            if len(seen) == 3:
                raise KeyboardInterrupt  # Ctrl-C, or kill -9, after three files were written

    with pytest.raises(KeyboardInterrupt):
        api.repair(api.RepairSettings(
            labels=labels, images=images, bank=str(bank), missing=(255,), out=tmp_path / "killed", classes="bank"),
            kill_after_three)
    assert not (tmp_path / "killed" / "report.json").exists()
    resumed = run(labels, images, bank, missing=(255,), out=tmp_path / "killed")
    assert resumed.totals["resumed"] == 3
    assert _rows(resumed) == _rows(whole)
    assert any(r.needs_review or r.pixels_changed for r in resumed.rows[:3])  # the figures came back too
    for key in ("files", "repaired", "unchanged", "failed", "needs_review", "pixels_changed"):
        assert resumed.totals[key] == whole.totals[key]


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_holds_it(job, bank, tmp_path):
    labels, images = job
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out, None):
        with pytest.raises(UsageError, match=f"process {os.getpid()}"):
            run(labels, images, bank, out=out)
    assert not [p for p in out.iterdir() if not p.name.startswith(".")]
    run(labels, images, bank, out=out)  # free again


def test_shards_of_one_run_work_at_once(job, bank, tmp_path):
    labels, images = job
    out = tmp_path / "out"
    results, errors = [], []

    def shard(i):
        try:
            results.append(run(labels, images, bank, out=out, shard=(i, 2)))
        except Exception as e:  # a thread's exception would vanish: the test reports it
            errors.append(e)

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(len(r.rows) for r in results) == len(list(labels.iterdir()))
    assert all(r.failed == 0 for r in results) and (out / "report.json").exists()


@pytest.mark.slow
def test_outputs_are_byte_identical_however_the_work_is_batched_sharded_or_split_in_processes(job, bank, tmp_path):
    labels, images = job
    one = run(labels, images, bank, out=tmp_path / "b1", batch_size=1)
    eight = run(labels, images, bank, out=tmp_path / "b8", batch_size=8)
    for i in range(2):
        run(labels, images, bank, out=tmp_path / "sharded", shard=(i, 2))
    run(labels, images, bank, out=tmp_path / "processes", processes=2)
    pngs = lambda folder: {p.name: p.read_bytes() for p in folder.glob("*.png")}  # noqa: E731
    assert pngs(one.out) == pngs(eight.out) == pngs(tmp_path / "sharded") == pngs(tmp_path / "processes")
    assert len(pngs(one.out)) == len(list(labels.iterdir()))


def test_a_rerun_with_other_settings_is_refused_unless_it_redoes_everything(job, bank, tmp_path):
    labels, images = job
    first = run(labels, images, bank, missing=(255,), preview=True)
    with pytest.raises(UsageError, match=r"other settings \(missing \[255\] -> \[\]"):
        run(labels, images, bank)
    again = run(labels, images, bank, overwrite=True)  # blind now, and no pictures: no stale page either
    assert again.totals["resumed"] == 0 and not (first.out / "preview.html").exists()
    run(labels, images, bank)  # the same settings as the last run: resumes


def test_a_full_disk_stops_the_run_with_one_reason_and_keeps_journal_and_outputs_consistent(job, bank, tmp_path,
                                                                                            monkeypatch):
    labels, images = job
    out = tmp_path / "out"
    real = repair_module.write_atomic
    calls = []

    def fill_up(path, data):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(repair_module, "write_atomic", fill_up)
    with pytest.raises(OutputError, match="cannot write \\(the disk is full\\)"):
        run(labels, images, bank, out=out, workers=1)  # one thread: the files finish in order
    monkeypatch.setattr(repair_module, "write_atomic", real)
    resumed = run(labels, images, bank, out=out)
    written = [c for c in calls[:3] if c.suffix == ".png"]
    assert resumed.totals["resumed"] == len(written) and resumed.failed == 0
    assert len(list(out.glob("*.png"))) == len(list(labels.iterdir()))


def test_outputs_get_the_permissions_an_ordinary_write_gives(job, bank):
    labels, images = job
    old = os.umask(0o022)
    try:
        res = run(labels, images, bank, preview=True)
    finally:
        os.umask(old)
    for p in [*res.out.glob("*.png"), res.out / "report.json", res.out / "report.csv", res.out / "preview.html",
              *(res.out / "preview").glob("*.jpg")]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_a_link_planted_in_the_preview_folder_cannot_overwrite_an_input(job, bank, tmp_path):
    labels, images = job
    out = tmp_path / "out"
    (out / "preview").mkdir(parents=True)
    (out / ".labelfix-output").write_bytes(b"labelfix writes this folder\n")
    victim = sorted(labels.iterdir())[0]
    before = tree_digest(labels)
    for f in labels.iterdir():  # every fixed name the pictures were once written through
        for when in ("before", "after"):
            (out / "preview" / f".{f.stem}.{when}.jpg.tmp").symlink_to(victim)
    run(labels, images, bank, out=out, preview=True)
    assert tree_digest(labels) == before


def test_unreadable_entries_and_companions_in_labels(job, bank):
    labels, images = job
    (labels / "classes.json").write_text('{"names": ["background", "red", "green", "blue", "yellow"]}')
    (labels / "README.md").write_text("how these were drawn")
    (labels / "dangling.png").symlink_to(labels / "never-fetched.png")  # an annex link never fetched
    (labels / "loop.png").symlink_to(labels / "loop.png")
    os.mkfifo(labels / "fifo.png")
    res = run(labels, images, bank, classes=None)
    rows = {r.file: r for r in res.rows}
    assert "classes.json" not in rows and "README.md" not in rows
    assert "broken symbolic link" in rows["dangling.png"].error
    assert "loop" in rows["loop.png"].error and "FIFO" in rows["fifo.png"].error
    assert res.failed == 3


def test_a_fifo_where_an_image_should_be_fails_that_file_and_does_not_hang(job, bank):
    labels, images = job
    stem = sorted(labels.iterdir())[0].stem
    (images / f"{stem}.jpg").unlink()
    os.mkfifo(images / f"{stem}.jpg")
    done = []
    t = threading.Thread(target=lambda: done.append(run(labels, images, bank)), daemon=True)
    t.start()
    t.join(timeout=120)
    assert done, "the run hung on the FIFO"
    row = next(r for r in done[0].rows if r.file == f"{stem}.png")
    assert row.status == "failed" and f"its image {images / stem}.jpg is a FIFO" in row.error


def test_image_errors_name_the_image(job, bank):
    labels, images = job
    first, second = sorted(labels.iterdir())[:2]
    Image.new("RGB", (7, 9)).save(images / f"{first.stem}.jpg")
    (images / f"{second.stem}.jpg").write_bytes((images / f"{second.stem}.jpg").read_bytes()[:200])
    rows = {r.file: r for r in run(labels, images, bank).rows}
    assert rows[first.name].error.startswith(f"its image {images / first.stem}.jpg is 7x9 but its label is")
    assert rows[second.name].error.startswith(f"its image {images / second.stem}.jpg is not a readable image")


def test_names_reach_report_csv_as_text_a_spreadsheet_does_not_evaluate(job, bank):
    labels, images = job
    first = sorted(labels.iterdir())[0]
    os.rename(first, labels / "=HYPERLINK(1).png")
    os.rename(images / f"{first.stem}.jpg", images / "=HYPERLINK(1).jpg")
    res = run(labels, images, bank)
    with open(res.out / "report.csv") as f:
        files = [r["file"] for r in csv.DictReader(f)]
    assert "'=HYPERLINK(1).png" in files


def test_values_that_can_never_match_and_ratios_the_bank_lacks(job, bank, tmp_path):
    labels, images = job
    for value in (-1, 256, 70000):
        with pytest.raises(UsageError, match=f"--missing {value}"):
            run(labels, images, bank, missing=(value,))
    notes = []
    res = api.repair(api.RepairSettings(labels=labels, images=images, bank=str(bank),
                                                            ratio=0.9, classes="bank"), notes.append)
    assert {r.ratio for r in res.rows if r.ratio} == {0.7}
    assert any(isinstance(e, Note) and "using its nearest, 0.7" in e.message for e in notes)
    manifest = (bank / "manifest.json").read_text()
    broken = tmp_path / "bank"
    broken.mkdir()
    for f in bank.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    import json
    d = json.loads(manifest)
    d["ratios"] = list(d["ratios"].values())
    (broken / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BankError, match="'ratios' must map each mask ratio"):
        run(labels, images, broken)


def test_a_label_too_large_is_refused_with_the_reason(job, bank, monkeypatch):
    labels, images = job
    monkeypatch.setattr(repair_module, "MAX_LABEL_PIXELS", 1000)
    rows = run(labels, images, bank).rows
    assert all(r.status == "failed" and "split it into tiles" in r.error for r in rows)


def test_index_labels_need_something_that_says_they_use_the_bank_s_classes(job, bank, tmp_path):
    labels, images = job
    with pytest.raises(UsageError, match="nothing says these labels use the bank's 5 classes"):
        run(labels, images, bank, classes=None)
    (tmp_path / "mine.json").write_text('{"names": ["background", "a", "b", "c", "d"]}')
    with pytest.raises(UsageError, match="do not match the bank's"):
        run(labels, images, bank, classes=str(tmp_path / "mine.json"))
    (tmp_path / "same.json").write_text('{"names": ["background", "red", "green", "blue", "yellow"]}')
    assert run(labels, images, bank, classes=str(tmp_path / "same.json")).failed == 0


def test_a_rerun_clears_the_pictures_a_killed_run_left_half_written(job, bank):
    labels, images = job
    first = run(labels, images, bank, preview=True)
    name = sorted(labels.iterdir())[0]
    (first.out / name.name).unlink()
    stale = first.out / "preview" / f".{name.stem}.after.jpg.a1b2c3d4.tmp"
    stale.write_bytes(b"half")
    run(labels, images, bank, preview=True)
    assert not stale.exists()


def test_a_one_row_label_is_repaired_blind(bank, tmp_path):
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    images.mkdir()
    label = np.zeros((3, 4000), np.uint8)  # finished on 8 x 8 blocks: a one-row working image
    label[:, 1000:1500] = 1
    label[:, 1501] = 255  # an outline with background on both sides: a dropped object to look for
    Image.fromarray(label, mode="L").save(labels / "thin.png")
    Image.fromarray(np.full((3, 4000, 3), 90, np.uint8)).save(images / "thin.jpg")
    res = run(labels, images, bank)
    assert res.failed == 0, res.rows[0].error
