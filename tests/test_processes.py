import json

import pytest
from conftest import run, tree_digest

from labelfix.errors import LabelfixError
from labelfix.repair.discover import shard_of
from labelfix.repair.processes import auto_processes, repair_in_processes, shard_from_environment, sub_shards
from labelfix.repair.run import repair_part
from labelfix.repair.settings import RepairSettings

NAMES = [f"{i:05d}.png" for i in range(400)]


@pytest.mark.parametrize("shard", [None, (0, 1), (1, 3)])
def test_sub_shards_split_exactly_the_files_of_the_shard(shard):
    i, k = shard or (0, 1)
    mine = {n for n in NAMES if shard_of(n, k) == i}
    parts = [{n for n in NAMES if shard_of(n, m) == j} for j, m in sub_shards(shard, 4)]
    assert all(parts)
    assert set().union(*parts) & mine == mine and all(p <= mine for p in parts)
    assert sum(len(p) for p in parts) == len(mine)  # no file in two parts


def test_auto_processes_take_cores_in_fours_and_enough_files_each():
    assert auto_processes(10_000, threads_per_process=4, cores=2) == 1
    assert auto_processes(10_000, threads_per_process=4, cores=16) == 4
    assert auto_processes(300, threads_per_process=4, cores=16) == 2
    assert auto_processes(10, threads_per_process=4, cores=16) == 1


def test_a_launcher_s_environment_says_which_shard_this_process_is(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(key, raising=False)
    assert shard_from_environment() is None
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")  # an array 1-4: the third of four
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert shard_from_environment() == (2, 4)
    monkeypatch.setenv("RANK", "1")  # torchrun's ranks come first
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert shard_from_environment() == (1, 8)


@pytest.mark.slow
def test_two_processes_write_what_one_writes(job, bank, tmp_path):
    labels, images = job
    one = run(labels, images, bank, out=tmp_path / "one", processes=1, preview=True)
    two = run(labels, images, bank, out=tmp_path / "two", processes=2, preview=True)
    assert two.failed == 0 and len(two.rows) == len(one.rows)
    strip = lambda rows: [dict(vars(r), seconds=0) for r in rows]  # noqa: E731
    assert strip(two.rows) == strip(one.rows)
    # timings differ in the reports; the journals and locks are each process's own
    visible = lambda out: {k: v for k, v in tree_digest(out).items()  # noqa: E731
                           if not k.startswith(".") and k not in ("report.json", "report.csv")}
    digest_one, digest_two = visible(one.out), visible(two.out)
    assert digest_two == digest_one  # labels, pictures and page; no report parts left behind
    report = json.loads((two.out / "report.json").read_text())
    assert report["runtime"]["processes"] == 2 and len(report["rows"]) == len(one.rows)


@pytest.mark.slow
def test_processes_within_a_shard_write_that_shard_s_report(job, bank, tmp_path):
    labels, images = job
    out = tmp_path / "out"
    for i in range(2):
        run(labels, images, bank, out=out, processes=2, shard=(i, 2))
    assert sorted(p.name for p in out.glob("report*.json")) == ["report.json", "report.shard-0-of-2.json",
                                                                 "report.shard-1-of-2.json"]  # the last joined them
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in labels.iterdir())


def test_a_child_s_error_reaches_the_parent_as_one_line(job, tmp_path):
    labels, images = job
    s = RepairSettings(labels=labels, images=images, out=tmp_path / "out", bank=str(tmp_path / "no-bank"), device="cpu",
                       classes="bank")
    with pytest.raises(LabelfixError, match="no-bank"):
        repair_in_processes(s, 2, threads=1, progress=lambda e: None, work=repair_part)


def test_the_command_picks_processes_and_the_library_keeps_one(monkeypatch, tmp_path):
    import importlib

    from typer.testing import CliRunner

    from labelfix.cli import app

    repair_module = importlib.import_module("labelfix.repair.run")

    seen = []

    def capture(settings, progress):
        seen.append(settings)
        raise LabelfixError("stop here")

    monkeypatch.setattr(repair_module, "repair", capture)  # the CLI imports it when the command runs
    (tmp_path / "l").mkdir(), (tmp_path / "i").mkdir()
    CliRunner().invoke(app, ["repair", str(tmp_path / "l"), "--images", str(tmp_path / "i")])
    CliRunner().invoke(app, ["repair", str(tmp_path / "l"), "--images", str(tmp_path / "i"), "--processes", "3"])
    assert [s.processes for s in seen] == [0, 3]
    assert RepairSettings(labels=tmp_path / "l", images=tmp_path / "i").processes == 1


def test_a_child_that_dies_ends_the_run_with_one_line(job, bank, tmp_path):
    import multiprocessing as mp
    import os
    import signal
    import threading
    import time

    labels, images = job
    s = RepairSettings(labels=labels, images=images, out=tmp_path / "out", bank=str(bank), device="cpu", classes="bank")
    raised = []

    def run_parent():
        try:
            repair_in_processes(s, 2, threads=1, progress=lambda e: None, work=repair_part)
        except LabelfixError as e:
            raised.append(str(e))

    parent = threading.Thread(target=run_parent)
    parent.start()
    deadline = time.time() + 30
    while not mp.active_children() and time.time() < deadline:  # killed while still importing torch
        time.sleep(0.02)
    os.kill(mp.active_children()[0].pid, signal.SIGKILL)
    parent.join(60)
    assert raised and "ended unexpectedly" in raised[0] and "resume" in raised[0]
    assert not mp.active_children()  # the other child was ended too
