"""The thread pipeline of one process: prepare, infer and finish labels, overlapped.

Decoding and resizing, inference and finishing and writing run as tasks on one thread pool; at most a few
batches (and PIXELS_IN_FLIGHT pixels) are in flight, so memory stays flat however large the folder is."""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from PIL import Image

from ..bank.store import Bank
from ..files import unreadable_reason
from ..inference.run import run_model
from .discover import relative_name
from .settings import MAX_AUTO_WORKERS, ImageRow, RepairSettings
from .steps import PreparedFile, finish_file, prepare_file

# labels, in pixels, being prepared, inferred or finished at once: each holds about 25 bytes a pixel (the
# image, the class indices, the masks), so large labels would otherwise fill the memory (48 labels of
# 2048 x 1536 peaked at 2.4 GB). 500 x 375 labels stay bound by the batch window (3 batches ahead) instead.
PIXELS_IN_FLIGHT = 32_000_000


def run_pipeline(s: RepairSettings, bank: Bank, device, out: Path, todo: list[Path], window: int,
                  on_row: Callable[[ImageRow], None]) -> None:
    """Decode and prepare, infer in batches, finish and write: all on the pool, overlapped; this thread
    only hands work on.

    The model runs on the pool too: as a thread of its own it got a fair share of the cores like every
    other thread (2/3 of a core on 2 cores with 2 workers) and held the whole pipeline back; as pool
    tasks all the work is spread over the cores (on 2 cores: ~10% faster, measured A/B). At most `window`
    files are being prepared, two batches inferred and two batches finished at any time, and files are
    taken on only while those in hand hold fewer than PIXELS_IN_FLIGHT pixels (one at least).
    """
    in_flight: dict[str, int] = {}  # file name -> its pixels, from taking it on until its row is recorded

    def record(row: ImageRow):
        in_flight.pop(row.file, None)
        on_row(row)

    with ThreadPoolExecutor(s.workers or min(MAX_AUTO_WORKERS, os.cpu_count() or 2)) as pool:
        pending: deque[Future] = deque()
        finishing: deque[Future] = deque()
        it = iter(todo)

        def refill():
            while len(pending) < window and (not in_flight or sum(in_flight.values()) < PIXELS_IN_FLIGHT):
                f = next(it, None)
                if f is None:
                    return
                in_flight[relative_name(f, Path(s.labels))] = _pixels(f)
                pending.append(pool.submit(prepare_file, f, s, bank))

        def collect(block_over: int):
            while finishing and (len(finishing) > block_over or finishing[0].done()):
                record(finishing.popleft().result())

        inferring: deque[tuple[list[PreparedFile], Future]] = deque()

        def hand_over(block_over: int):
            """Send the items of batches the model has done to be finished, oldest batch first."""
            while inferring and (len(inferring) > block_over or inferring[0][1].done()):
                batch, fut = inferring.popleft()
                for item, c in zip(batch, fut.result()):
                    finishing.append(pool.submit(finish_file, item, c, s, bank, out))

        refill()
        while pending or inferring or finishing:
            if not pending:
                # the pixel budget is spent on files further down the line: wait for the oldest of them
                if inferring:
                    hand_over(block_over=len(inferring) - 1)
                else:
                    collect(block_over=len(finishing) - 1)
                refill()
                continue
            batch: list[PreparedFile] = []
            while pending and len(batch) < s.batch_size:
                item = pending.popleft().result()
                if item.row.status == "failed":
                    item.row.seconds = round(time.perf_counter() - item.t0, 4)
                    record(item.row)
                else:
                    batch.append(item)
                refill()
            if batch:
                inferring.append((batch, pool.submit(run_model, bank, [b.model_input for b in batch], device,
                                                     precision=s.precision)))
                hand_over(block_over=1)
            collect(block_over=2 * s.batch_size)
            refill()


def _pixels(path: Path) -> int:
    """A label file's pixel count from its header (1 if unreadable: preparing it reports why)."""
    if unreadable_reason(path):
        return 1  # a FIFO would never open
    try:
        with Image.open(path) as im:
            return max(1, im.size[0] * im.size[1])
    except Exception:
        return 1
