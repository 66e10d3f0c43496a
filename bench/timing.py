"""Timing rules shared by the benchmarks: warm-up excluded, interleaved repeats, medians.

A shared, noisy machine makes absolute times drift; running every contender once per repeat,
in turn (A B C A B C ...), exposes them all to the same drift, so their ratios stay meaningful.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA kernels run asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_step_times(
    steps: dict[str, Callable[[], None]],
    repeats: int,
    steps_per_repeat: int,
    warmup: int,
    device: torch.device,
    order_log: list[str] | None = None,
) -> dict[str, list[float]]:
    """Seconds per step of each contender, one value per repeat.

    Each contender first runs ``warmup`` untimed steps (compilation, allocator and oneDNN
    caches). Then, ``repeats`` times, every contender in turn runs ``steps_per_repeat`` timed
    steps. ``order_log`` (when given) receives the contender names in the order they were timed.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
        synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps_per_repeat):
                step()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / steps_per_repeat)
            if order_log is not None:
                order_log.append(name)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int, repeats: int = 5) -> float:
    """Measured peak of this machine in FLOP/s: the median rate of a large square matmul
    (2 * size**3 FLOPs, the multiply-add convention used for MFU)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        rates.append(2 * size**3 / (time.perf_counter() - start))
    return statistics.median(rates)
