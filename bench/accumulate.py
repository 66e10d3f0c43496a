"""Gradient accumulation (``trainer.accumulate=N``): memory and time of one training step.

    python bench/accumulate.py [--arch resnet18] [--crop 96] [--batch 64] [--accumulate 1,2,4,8]

Each setting runs in a fresh process: the method (SimCLR, two views) is built, then one step
(forward and backward) is taken while the process's peak resident memory is tracked (Linux
VmHWM, reset just before the step through /proc/self/clear_refs); the growth over the memory
held before the step is what the step needed (activations, gradients, workspace). Then three
more steps are timed. The trunk runs the batch in N micro-batches recomputed in backward
(sslframe/distributed/micro_batches.py), so its activations shrink about N-fold while the
losses still see the whole batch; the price is one more trunk forward per step. Results:
bench/results/accumulate.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(arch: str, crop: int, batch: int, accumulate: int) -> dict:
    """One setting, in this process."""
    import torch

    from sslframe.config import compose_config
    from sslframe.distributed.micro_batches import split_trunk_batches
    from sslframe.methods import StepContext, build_method

    torch.manual_seed(0)
    cfg = compose_config("train", ["config=simclr_resnet50", f"trunk.arch={arch}", "trainer.precision=fp32"])
    method = build_method(cfg).train()
    if accumulate > 1:
        split_trunk_batches(method.trunk, accumulate)
    crops = [torch.randn(batch, 3, crop, crop) for _ in range(2)]
    ctx = StepContext(step=0, epoch=0, steps_per_epoch=10, total_steps=10)

    def step() -> float:
        out = method.training_step(crops, ctx)
        out.loss.backward()
        for p in method.parameters():
            p.grad = None
        return float(out.loss.detach())

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kb("VmRSS")
    loss = step()
    peak = _status_kb("VmHWM")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "accumulate": accumulate,
        "micro_batch": f"{2 * batch // accumulate} of {2 * batch}",
        "step_peak_MB": round((peak - before) / 1024),
        "step_s": round(sorted(times)[1], 3),
        "loss": round(loss, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--accumulate", default="1,2,4,8")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.arch, args.crop, args.batch, args.one)))
        return
    from bench.common import write_results

    rows = []
    for n in (int(x) for x in args.accumulate.split(",")):
        cmd = [sys.executable, __file__, f"--arch={args.arch}", f"--crop={args.crop}", f"--batch={args.batch}"]
        out = subprocess.run([*cmd, f"--one={n}"], capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        r["memory_vs_1"] = round(r["step_peak_MB"] / base["step_peak_MB"], 2)
        r["time_vs_1"] = round(r["step_s"] / base["step_s"], 2)
    notes = (
        f"SimCLR + {args.arch}, {args.batch} images x 2 views of {args.crop} px, float32, one process on the "
        "CPU. step_peak_MB: growth of the process's peak resident memory during one forward and backward "
        "(fresh process per row); step_s: median of 3 steps. The loss sees the whole batch in every row; it "
        "moves a little with N because the trunk's batch norm normalises each micro-batch (with a layer-norm "
        "or group-norm trunk it is the same: tests/distributed/test_micro_batches.py)."
    )
    path = write_results(
        "accumulate",
        rows,
        notes,
        columns=["accumulate", "micro_batch", "step_peak_MB", "memory_vs_1", "step_s", "time_vs_1", "loss"],
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
