"""The output folder's own files: the marker that says labelfix writes there, the lock of the run writing
it, and the journal of the files it finished.

    .labelfix-output                  marker, written before any label: a re-run or another shard knows the folder
    .labelfix.lock                    held (an OS lock) by the run writing the folder; .labelfix.shard-I-of-N.lock
                                      by one shard of a run; beside it `.pid`, which process holds it
    .labelfix-journal.jsonl           the settings that shape the outputs, then one row per finished file,
                                      appended and flushed to disk as each file is written
                                      (.labelfix-journal.shard-I-of-N.jsonl for a shard)

A resumed run takes the rows of the files it skips from the journal, so its report is what one
uninterrupted run would have written; a run with other settings is refused unless it redoes everything.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from filelock import FileLock, Timeout

from ..errors import UsageError
from ..files import TEMPORARY_SUFFIX, write_atomic

MARKER = ".labelfix-output"
MARKER_TEXT = b"labelfix writes this folder\n"
JOURNAL = ".labelfix-journal"
LOCK = ".labelfix"
REPORT_FORMAT = "labelfix-report"  # the `format` field of every report labelfix writes
PROBE_WAIT_S = 1.0  # how long a rival's lock may be busy before it counts as held by a running rival


def part_name(shard: tuple[int, int] | None) -> str:
    """'' for a whole run, '.shard-I-of-N' for one shard."""
    return "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"


def is_labelfix_output(out: Path) -> bool:
    """Whether labelfix wrote this folder: its marker, or a report of labelfix's format."""
    try:
        if (out / MARKER).read_bytes() == MARKER_TEXT:
            return True
    except OSError:
        pass
    for report in out.glob("report*.json"):
        try:
            d = json.loads(report.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and (d.get("format") == REPORT_FORMAT or "labelfix_version" in d and "rows" in d):
            return True  # reports before the format field had labelfix_version and rows
    return False


def check_output_folder(out: Path) -> None:
    """The output folder is new, empty, or one labelfix wrote: a re-run would skip, and --overwrite
    replace, same-named files of any other folder (another dataset's labels)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: a file, not a folder to write the repaired labels into")
    if not out.is_dir() or is_labelfix_output(out):
        return
    others = sum(1 for e in os.scandir(out) if not e.name.startswith("."))
    if others:
        raise UsageError(f"{out}: holds {others} entr{'ies' if others > 1 else 'y'} that labelfix did not write "
                         "(no labelfix marker or report there); choose another --out, or empty it")


def mark(out: Path) -> None:
    """Write the marker (where it is not yet)."""
    if not (out / MARKER).exists():
        write_atomic(out / MARKER, MARKER_TEXT)


class OutputLock:
    """The OS lock of one run (or one shard of a run) on an output folder; a second run is a usage error
    that names the process holding it. A whole run also excludes shards, and a shard a whole run."""

    def __init__(self, out: Path, shard: tuple[int, int] | None):
        self.out, self.shard = out, shard
        self.lock = FileLock(str(out / f"{LOCK}{part_name(shard)}.lock"), timeout=0)

    def __enter__(self) -> "OutputLock":
        rivals = ([p for p in self.out.glob(f"{LOCK}.shard-*-of-*.lock")] if self.shard is None
                  else [self.out / f"{LOCK}.lock"])
        self._take(self.lock)
        for rival in rivals:  # held by a run of another kind: refuse; free: ours to pass
            # a shard starting at the same moment probes the same rival for a few microseconds: wait that out
            probe = FileLock(str(rival), timeout=PROBE_WAIT_S, poll_interval=0.01)
            try:
                probe.acquire()
            except Timeout:
                self.lock.release()
                raise UsageError(self._busy(rival)) from None
            probe.release()
        write_atomic(Path(f"{self.lock.lock_file}.pid"), f"{os.getpid()}\n".encode())
        return self

    def _take(self, lock: FileLock) -> None:
        try:
            lock.acquire()
        except Timeout:
            raise UsageError(self._busy(Path(lock.lock_file))) from None

    def _busy(self, lock_file: Path) -> str:
        try:
            pid = f"process {int(Path(f'{lock_file}.pid').read_text())}"
        except (OSError, ValueError):
            pid = "another process"
        return (f"{self.out}: another labelfix run ({pid}) is writing this folder; wait for it to end or "
                "choose another --out")

    def __exit__(self, *exc) -> None:
        Path(f"{self.lock.lock_file}.pid").unlink(missing_ok=True)
        self.lock.release()


@dataclass(frozen=True)
class JournalEntry:
    path: Path
    settings: dict
    rows: dict[str, dict]  # file name -> its report row


def read_journals(out: Path) -> list[JournalEntry]:
    """Every journal in the folder (a whole run's and the shards'). A torn last line (a crash while
    appending) is left out: its file is redone."""
    entries = []
    for path in sorted(out.glob(f"{JOURNAL}*.jsonl")):
        settings, rows = None, {}
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if settings is None:
                settings = d.get("settings") if isinstance(d, dict) else None
            elif isinstance(d, dict) and "file" in d:
                rows[d["file"]] = d
        if settings is not None:
            entries.append(JournalEntry(path, settings, rows))
    return entries


class Journal:
    """This run's journal: its settings first, then a line per finished file, each flushed to disk."""

    def __init__(self, out: Path, shard: tuple[int, int] | None, settings: dict, fresh: bool):
        self.path = out / f"{JOURNAL}{part_name(shard)}.jsonl"
        if fresh or not self.path.exists():
            write_atomic(self.path, (json.dumps({"settings": settings}) + "\n").encode())
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        self.fd = os.open(self.path, flags)
        if not self.path.read_bytes().endswith(b"\n"):  # a crash in the middle of a line: start a new one
            os.write(self.fd, b"\n")

    def append(self, row: dict) -> None:
        os.write(self.fd, (json.dumps(row) + "\n").encode())
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def clear_stale_temporaries(out: Path, names: set[str]) -> int:
    """Delete the temporary files (`.NAME.XXXXXXXX.tmp`, files.write_atomic) that a run killed while
    writing left behind for these names (paths under `out`). Only the names this run writes: another shard
    may be writing its own beside them. Returns how many it deleted."""
    gone = 0
    for folder in {PurePosixPath(n).parent for n in names}:
        try:
            entries = list(os.scandir(out / folder))
        except OSError:
            continue  # not made yet
        for entry in entries:
            name = entry.name
            if (name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)
                    and (folder / name[1:].rsplit(".", 2)[0]).as_posix() in names):
                try:
                    os.unlink(entry.path)
                    gone += 1
                except OSError:
                    pass  # gone already, or not ours to delete: it does no harm
    return gone
