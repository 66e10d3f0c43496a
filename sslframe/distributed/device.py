"""The device a process trains on and what its hardware does fast: the device and precision
decisions every layer reads (docs/architecture.md, principle 9)."""

from __future__ import annotations

from pathlib import Path

import torch

from sslframe.errors import UserError


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 has hardware support: CUDA with bf16, or a CPU with AVX512-BF16 or AMX.
    Elsewhere oneDNN emulates it, far slower than fp32 (13x on an AVX2 CPU, bench/throughput.py)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 autocast where the hardware runs it natively, fp32 elsewhere."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA where it is available, else the CPU; ``cuda`` without CUDA is a clear error."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("trainer.device=cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")
