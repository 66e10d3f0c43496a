"""Row 5 of ``make bench``: memory per component and scaling from 1 to 2 processes.

    python bench/scaling.py [--quick] [--rounds 3] [--steps 4]

SimCLR on ResNet-18 (32 px views, 16 images per process), our trainer's step. Configurations,
each in fresh processes and alternated round by round (1, 2, 1, 2, ...) so drift hits both:

- ``1 process``: all cores (``torch.set_num_threads(cpu_count)``);
- ``2 processes``: DDP over gloo on 127.0.0.1, the cores split between them.

Per process: bytes of parameters, gradients and optimizer state, the activation bytes autograd
saves in one step (measured by the planner on the meta device), and the peak resident memory.
DDP vs FSDP2 memory per rank on a large trunk is bench/strategies.py.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import quick_mode, write_results
from bench.steps import Case, Contenders

MB = 2**20


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def activation_bytes(contenders: Contenders) -> float:
    """Bytes autograd saves in one step of this case, measured on ``meta`` by the planner."""
    from sslframe.methods import build_method
    from sslframe.planner.measure import measure_step

    with torch.device("meta"):
        method = build_method(contenders.config("channels_last"))
    case = contenders.case
    return measure_step(method, list(case.crop_sizes), case.batch, torch.float32).activation_bytes * case.batch


def _rank(rank: int, world: int, port: int, threads: int, case: Case, steps: int, queue: Any) -> None:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(threads)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    strategy = "ddp" if world > 1 else "none"
    contenders = Contenders(case, torch.device("cpu"), [f"distributed.strategy={strategy}"])
    trainer = contenders.trainer("channels_last")
    step = contenders.step_for(trainer)
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    method = trainer.method
    optimizer_state = [t for s in trainer.optimizer.state.values() for t in s.values()]
    queue.put(
        {
            "rank": rank,
            "step_s": statistics.median(times),
            "params_MB": _tensor_bytes(method.parameters()) / MB,
            "grads_MB": _tensor_bytes(p for p in method.parameters() if p.requires_grad) / MB,
            "optimizer_MB": _tensor_bytes(optimizer_state) / MB,
            "activations_MB": activation_bytes(contenders) / MB,
            "runtime_MB": baseline / MB,
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    if world > 1:
        torch.distributed.destroy_process_group()


def run(world: int, threads: int, case: Case, steps: int) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_rank, args=(r, world, port, threads, case, steps, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: list[dict[str, Any]] = []
    while len(results) < world:
        if not queue.empty():
            results.append(queue.get())
            continue
        if any(p.exitcode not in (None, 0) for p in procs):
            for p in procs:
                p.kill()
            raise RuntimeError(f"a benchmark process of the {world}-process run failed (its error is above)")
        time.sleep(0.2)
    for p in procs:
        p.join()
    return sorted(results, key=lambda r: r["rank"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=quick_mode())
    parser.add_argument("--rounds", type=int, default=0, help="alternations of 1 and 2 processes (default 3)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per run (default 4)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    steps = args.steps or (2 if args.quick else 4)
    cores = os.cpu_count() or 1
    case = Case("simclr", "resnet18", 8 if args.quick else 16, (16, 16) if args.quick else (32, 32))
    runs: dict[int, list[list[dict[str, Any]]]] = {1: [], 2: []}
    for _ in range(rounds):
        for world in (1, 2):
            runs[world].append(run(world, max(cores // world, 1), case, steps))
    rows = []
    for world, results in runs.items():
        step_s = statistics.median(statistics.median(r["step_s"] for r in ranks) for ranks in results)
        last = results[-1][0]
        rows.append(
            {
                "processes": world,
                "threads_each": max(cores // world, 1),
                "images_per_s": world * case.batch / step_s,
                **{k: v for k, v in last.items() if k.endswith("_MB")},
                "peak_rss_MB_max": max(r["peak_rss_MB"] for ranks in results for r in ranks),
            }
        )
    scaling = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    for row in rows:
        row["vs_1_process"] = row["images_per_s"] / rows[0]["images_per_s"]
    notes = (
        f"{case.name} per process, our trainer's step (DDP over gloo for 2 processes), {cores} cores split "
        f"between the processes; medians over {rounds} alternated rounds of {steps} steps. 2 processes deliver "
        f"{scaling:.2f}x the images/s of 1 on the same cores. runtime_MB: resident memory before the model is "
        "built (Python, torch); activations_MB: bytes autograd saves in one step (planner, meta device)."
    )
    print(write_results("scaling", rows, notes).read_text())


if __name__ == "__main__":
    main()
