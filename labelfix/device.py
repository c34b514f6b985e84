"""Device choice: CUDA (with bf16 autocast) when present, else CPU; inference precision."""

from __future__ import annotations

import os
import time
from contextlib import nullcontext

import torch

from .errors import UsageError


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA if present, else the CPU. A bare `cuda` (or auto) under a launcher that gives each process
    a LOCAL_RANK (torchrun) is that rank's GPU, so that N ranks use N GPUs, not all the first."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UsageError(f"--device {name}: choose auto, cpu or cuda")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        try:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        except ValueError:
            pass
    return torch.device(name)


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def others_running(samples: int = 5) -> int:
    """How many other threads want a core right now (the running count of /proc/loadavg, less this one;
    the median of a few readings). 0 where the system does not say (not Linux)."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0
        time.sleep(0.01)
    return max(0, sorted(counts)[len(counts) // 2])


def fit_threads_to_load() -> int:
    """Set torch's intra-op threads to the cores no other process is using (at least one), and return it.

    OpenMP's threads wait for each other at the end of every operation, spinning: on a busy machine one of
    them is always waiting for a core, and the spinning others take the cores it waits for. Beside three
    CPU-bound processes on 2 cores, a training run with 2 threads ran 11.5x slower than idle, with 1 thread
    2.5x (benchmarks/under_load.py). Training calls this at every epoch, so the count follows the load."""
    threads = max(1, usable_cores() - others_running())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


PRECISIONS = ("auto", "fp32", "bf16")


def autocast(device: torch.device):
    """Training's mixed precision: bf16 on CUDA, fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA, fp32 on the CPU.

    On a CPU with AMX, bf16 made the whole repair only about 5% faster and three of the bundled bank's
    five VOC repair figures worse (dropped objects 69.8 -> 68.0 mIoU, forgotten 47.9 -> 46.5, blocks
    90.0 -> 89.3; cells 57.6 -> 58.5; docs/benchmarks.md), so the CPU runs fp32 unless asked."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: choose {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" else "fp32"


def inference_autocast(device: torch.device, precision: str):
    """The model's precision at inference: bf16 autocast on the device, or plain fp32."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
