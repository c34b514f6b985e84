import os
import stat

import pytest

from labelfix import files
from labelfix.files import unreadable_reason, write_atomic


def test_write_atomic_replaces_the_file_whole_with_ordinary_permissions(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    old = os.umask(0o022)
    try:
        write_atomic(target, b"new")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary left


def test_a_link_planted_at_any_temporary_name_cannot_redirect_the_write(tmp_path, monkeypatch):
    victim = tmp_path / "input.png"
    victim.write_bytes(b"precious")
    names = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".out.png.aaaaaaaa.tmp").symlink_to(victim)  # the name the writer draws first
    write_atomic(tmp_path / "out.png", b"repaired")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "out.png").read_bytes() == b"repaired"


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "input.png"
    victim.write_bytes(b"precious")
    (tmp_path / "out.png").symlink_to(victim)
    write_atomic(tmp_path / "out.png", b"repaired")
    assert victim.read_bytes() == b"precious" and not (tmp_path / "out.png").is_symlink()


def test_write_atomic_flushes_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    write_atomic(tmp_path / "a", b"x")
    assert len(synced) == 2  # the file before the rename, the folder after it


def test_a_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(OSError):
        write_atomic(tmp_path / "a", b"x")
    assert not list(tmp_path.iterdir())


def test_unreadable_reason_names_what_is_not_a_regular_file(tmp_path):
    regular = tmp_path / "a.png"
    regular.write_bytes(b"x")
    assert unreadable_reason(regular) is None
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    assert "broken symbolic link" in unreadable_reason(tmp_path / "dangling.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    assert "loop" in unreadable_reason(tmp_path / "loop.png")
    os.mkfifo(tmp_path / "fifo.png")
    assert "a FIFO" in unreadable_reason(tmp_path / "fifo.png")
    assert "folder" in unreadable_reason(tmp_path)
    assert unreadable_reason(tmp_path / "gone.png") == "does not exist"
