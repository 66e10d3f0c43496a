"""Memory per rank and step time of DDP vs FSDP2 at world size 2 (gloo, CPU).

    python bench/strategies.py [--arch regnet_y_16gf] [--steps 3] [--crop 96]

SwAV on the chosen trunk (default RegNetY-16GF, SEER's smaller trunk) with its 2048-2048-128
head and 3000 prototypes, LARS. Per rank: bytes of parameters, gradients and optimizer state
held by that rank (FSDP: the local shards), the process's peak resident memory, and the median
step time. Each strategy runs in fresh processes so peaks do not mix. Expected: FSDP's state per
rank is about half of DDP's at world size 2.
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
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_results


def _local_bytes(tensors: Any) -> int:
    total = 0
    for t in tensors:
        if t is None:
            continue
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def _rank(rank: int, world: int, port: int, strategy: str, args: argparse.Namespace, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from sslframe.config import compose_config
    from sslframe.distributed.env import detect_env
    from sslframe.distributed.parallelize import parallelize
    from sslframe.methods import StepContext, build_method
    from sslframe.optim.build import build_optimizer

    cfg = compose_config(
        "train",
        [
            "config=swav_regnet",
            f"trunk.arch={args.arch}",
            "data.path=unused",
            f"distributed.strategy={strategy}",
            "trainer.channels_last=false",
            "method.freeze_prototypes_steps=0",
        ],
    )
    torch.manual_seed(0)
    method = build_method(cfg)
    method.set_process_group(dist.group.WORLD)
    model = parallelize(method, cfg, detect_env(), torch.device("cpu"))
    optimizer = build_optimizer(method, cfg.optim, 0.1)
    crops = [torch.randn(args.batch, 3, args.crop, args.crop) for _ in range(2)]
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        out = model(crops, StepContext(step, 0, 100, 100))
        out.loss.backward()
        optimizer.step()
        grads = _local_bytes(p.grad for p in method.parameters())
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    queue.put(
        {
            "strategy": strategy,
            "rank": rank,
            "params_MB": _local_bytes(method.parameters()) / 2**20,
            "grads_MB": grads / 2**20,
            "optimizer_MB": _local_bytes(state) / 2**20,
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "step_s_median": statistics.median(times[1:] or times),
        }
    )
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="regnet_y_16gf")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for strategy in ("ddp", "fsdp"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        queue = ctx.SimpleQueue()
        procs = [ctx.Process(target=_rank, args=(r, 2, port, strategy, args, queue)) for r in range(2)]
        for p in procs:
            p.start()
        results = sorted((queue.get() for _ in procs), key=lambda r: r["rank"])
        for p in procs:
            p.join()
        rows += results
    ddp = rows[0]["params_MB"] + rows[0]["grads_MB"] + rows[0]["optimizer_MB"]
    fsdp = rows[2]["params_MB"] + rows[2]["grads_MB"] + rows[2]["optimizer_MB"]
    notes = (
        f"SwAV + {args.arch}, 2 ranks (gloo, CPU, 1 thread each), {args.batch} images x 2 crops of "
        f"{args.crop} px per rank, LARS. Parameters + gradients + optimizer state on rank 0: "
        f"DDP {ddp:.0f} MB, FSDP {fsdp:.0f} MB (ratio {fsdp / ddp:.2f}). Peak RSS includes building the "
        "full model before sharding, so it does not halve."
    )
    path = write_results("strategies", rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
