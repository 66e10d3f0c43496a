"""Run a function in several real processes joined by a gloo process group on 127.0.0.1."""

from __future__ import annotations

import os
import queue as queue_module
import socket
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _to_plain(value: Any) -> Any:
    """Tensors travel back as numpy arrays: shared-memory handles die with the child process."""
    if isinstance(value, torch.Tensor):
        return ("__tensor__", value.detach().cpu().numpy())
    if isinstance(value, (list, tuple)):
        return type(value)(_to_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _from_plain(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__tensor__":
        return torch.from_numpy(value[1])
    if isinstance(value, (list, tuple)):
        return type(value)(_from_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_plain(v) for k, v in value.items()}
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    # Share the test process's cores (tests/conftest.py) between the ranks, as torchrun does,
    # instead of oversubscribing them.
    cores = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // world))
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        queue.put((rank, _to_plain(fn(rank, world, *args)), None))
    except Exception:
        queue.put((rank, None, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# A rank that has not answered by then is taken as hung (a rank waiting for one that stopped):
# the test fails instead of blocking the suite.
RESULT_TIMEOUT_S = 600


def run_distributed(fn: Callable[..., Any], world: int, *args: Any) -> list[Any]:
    """``fn(rank, world, *args)`` in ``world`` processes; returns each rank's result in rank order."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, fn, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    for _ in range(world):
        try:
            rank, value, error = queue.get(timeout=RESULT_TIMEOUT_S)
        except queue_module.Empty:
            for p in procs:
                p.kill()
            waiting = sorted(set(range(world)) - set(results))
            raise AssertionError(f"ranks {waiting} gave no result within {RESULT_TIMEOUT_S} s (hung)") from None
        if error:
            for p in procs:
                p.kill()
            raise AssertionError(f"rank {rank} failed:\n{error}")
        results[rank] = _from_plain(value)
    for p in procs:
        p.join(timeout=60)
    return [results[r] for r in range(world)]
