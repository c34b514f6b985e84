"""Repair in several processes: the files split into sub-shards, one process each, reports joined.

The threads of one process queue for Python's interpreter lock (settings.MAX_AUTO_WORKERS), so on a
machine with more cores than a process can keep busy, more work in parallel takes more processes. Each
child is a whole `repair` of one sub-shard (its own pool, its own model, on the GPU too) that writes its
part of the report; the parent forwards the children's per-file events and joins the parts.

Children are spawned (fork is unsafe once torch or CUDA has started threads), and a spawned child imports
the caller's main module: a script that calls `repair` with processes other than 1 must do so under
`if __name__ == "__main__":`, as the `labelfix` command does.

Sub-shards refine `--shard I/N`: child j of n repairs the files with hash % (N n) == I + N j, exactly the
files of shard I, so `--shard` across machines and processes within one combine.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..errors import LabelfixError
from .events import FileDone
from .settings import RepairSettings

# Starting costs: a child takes 2-5 s to import torch, start CUDA and load the bank, and its first batches
# are slow. On a 16-core H100 host, 4 processes repaired 300 labels in 15.9 s and 1,111 in 19.3 s, one
# process 16 in 5.0 s and 1,111 in 31 s: 4 processes are worth it from about 500 files.
MIN_FILES_PER_PROCESS = 128


def sub_shards(shard: tuple[int, int] | None, n: int) -> list[tuple[int, int]]:
    """The n shards that together hold exactly the files of `shard` (all files when None)."""
    i, k = shard or (0, 1)
    return [(i + k * j, k * n) for j in range(n)]


def shard_from_environment() -> tuple[int, int] | None:
    """(I, N) of this process among those a launcher started: torchrun's RANK / WORLD_SIZE, or a Slurm job
    array's task (SLURM_ARRAY_TASK_ID from SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT); None if neither."""
    env = os.environ
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            return int(env["RANK"]), int(env["WORLD_SIZE"])
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            return int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"])
    except ValueError:
        return None
    return None


def auto_processes(todo: int, threads_per_process: int, cores: int | None = None) -> int:
    """One process per `threads_per_process` cores, and at least MIN_FILES_PER_PROCESS files each."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores // threads_per_process, todo // MIN_FILES_PER_PROCESS))


def repair_in_processes(s: RepairSettings, n: int, threads: int, progress: Callable[[FileDone], None],
                        work: Callable) -> list[Path]:
    """Repair the files of `s` in n child processes of `threads` pipeline threads each, each running
    `work(settings, progress)` (a module-level function: it travels to the children by name) on its
    shard; return their report parts. Per-file events reach `progress` as the children send them."""
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    children = [ctx.Process(target=_child, args=(replace(s, shard=shard, workers=threads), events, work),
                            daemon=True)
                for shard in sub_shards(s.shard, n)]
    for c in children:
        c.start()
    parts: list[Path] = []
    try:
        while len(parts) < n:
            try:
                e = events.get(timeout=1.0)
            except queue.Empty:
                ended = [c for c in children if c.exitcode not in (None, 0)]
                if ended:
                    raise LabelfixError(f"a repair process ended unexpectedly (exit code {ended[0].exitcode}); "
                                        "run the command again to resume") from None
                continue
            if isinstance(e, FileDone):
                progress(e)
            elif isinstance(e, _PartDone):
                parts.append(Path(e.report))
            elif isinstance(e, _Failed):
                raise LabelfixError(e.message)
    finally:
        for c in children:
            if c.is_alive():
                c.terminate()
            c.join()
    return parts


def _child(s: RepairSettings, events, work: Callable) -> None:
    # Ctrl-C reaches the whole process group: the parent alone answers it (and ends the children), so
    # the user sees one line, not a traceback from every child
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        result = work(s, lambda e: events.put(e) if isinstance(e, FileDone) else None)
    except Exception as e:  # the parent says it in one line, like any error of its own
        events.put(_Failed(str(e) if isinstance(e, LabelfixError) else f"{type(e).__name__}: {e}"))
        raise SystemExit(1) from None
    events.put(_PartDone(str(result.report_path)))


@dataclass(frozen=True)
class _PartDone:
    """A child's message: its part is done, its report written there."""
    report: str


@dataclass(frozen=True)
class _Failed:
    """A child's message: it stopped with this error."""
    message: str
