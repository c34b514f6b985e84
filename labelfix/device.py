"""Device choice: CUDA (with bf16 autocast) when present, else CPU; inference precision."""

from __future__ import annotations

import os
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


PRECISIONS = ("auto", "fp32", "bf16")


def autocast(device: torch.device):
    """Training's mixed precision: bf16 on CUDA, fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probes: assume not
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 where the device does bf16 natively (CUDA, or a CPU with AVX512-BF16 or AMX), else fp32."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: choose {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"


def inference_autocast(device: torch.device, precision: str):
    """The model's precision at inference: bf16 autocast on the device, or plain fp32."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
