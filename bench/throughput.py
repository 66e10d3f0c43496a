"""Rows 1-3 of ``make bench``: train-step images/s, ours next to lightly's, and MFU.

    python bench/throughput.py [--quick] [--device cpu|cuda] [--threads N] [--repeats 5]
                               [--cases simclr/resnet18,swav/resnet18] [--no-compile]

For each case (method, trunk, batch, crop sides) every contender is built first: our trainer's
step in several variants (eager fp32, bf16 autocast, channels_last, torch.compile, their
combination) and lightly's step on the same trunk, batch and precision (bench/peers.py). They
are then timed interleaved (A B C A B C ...), warm-up steps excluded, and the median of the
repeats is reported, with ratios taken inside the case. MFU is the model FLOPs of one step
(``torch.utils.flop_counter``) per second over the machine's peak, measured in the same run as
the rate of a large fp32 and bf16 matmul.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import quick_mode, write_results
from bench.steps import Case, Contenders, step_flops
from bench.timing import interleaved_step_times, matmul_peak, median
from sslframe.distributed.device import native_bf16


def cases(device: torch.device, quick: bool, side: int = 0) -> list[tuple[Case, list[str], list[str]]]:
    """(case, our variants, lightly precisions). bf16 rows where bf16 is native (on other CPUs
    one row shows what emulated bf16 costs); torch.compile only in the ResNet-18 cases (inductor
    compiles a ResNet in minutes on 2 CPU cores)."""
    if quick:
        return [(Case("simclr", "resnet18", 8, (16, 16)), ["eager", "channels_last"], ["fp32"])]
    gpu = device.type == "cuda"
    size, local, batch = (160, 96, 128) if gpu else (32, 16, 16)
    if side:
        size, local = side, side // 2
    simclr = (size, size)
    swav = (size, size, local, local, local, local)
    if native_bf16(device):
        lightly = ["fp32", "bf16"]
        first = ["eager", "channels_last", "bf16", "compile", "bf16+channels_last+compile"]
        second = ["eager", "channels_last", "bf16", "bf16+channels_last+compile"]
        conv = ["eager", "channels_last", "bf16", "bf16+channels_last"]
        vit = ["eager", "bf16"]
    else:
        lightly = ["fp32"]
        first = ["eager", "channels_last", "channels_last+compile", "bf16"]
        second = conv = ["eager", "channels_last"]
        vit = ["eager"]
    return [
        (Case("simclr", "resnet18", batch, simclr), first, lightly),
        (Case("swav", "resnet18", batch, swav), second, lightly),
        (Case("simclr", "resnet50", batch // 2, simclr), conv, lightly),
        (Case("swav", "resnet50", batch // 2, swav), conv, lightly),
        (Case("swav", "regnety_400mf", batch, swav), conv, lightly),
        (Case("simclr", "vit_tiny", batch, simclr), vit, lightly),
    ]


def measure_peaks(device: torch.device, quick: bool) -> dict[str, float]:
    """Matmul peaks in FLOP/s; the side grows until one product takes a noticeable time."""
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        side = 256
        limit = 1024 if quick else (16384 if device.type == "cuda" else 4096)
        while side < limit and 2 * side**3 / matmul_peak(dtype, device, side, repeats=1) < 0.2:
            side *= 2
        peaks[name] = matmul_peak(dtype, device, side)
    return peaks


def run_case(
    case: Case, variants: list[str], precisions: list[str], device: torch.device, args: argparse.Namespace
) -> list[dict[str, Any]]:
    contenders = Contenders(case, device)
    steps: dict[str, Any] = {}
    build_s: dict[str, float] = {}
    for variant in variants:
        start = time.perf_counter()
        steps[f"sslframe {variant}"] = contenders.ours(variant)
        build_s[f"sslframe {variant}"] = time.perf_counter() - start
    for precision in precisions:
        steps[f"lightly {precision}"] = contenders.lightly(precision)
    warm_start = {}
    for name, step in steps.items():
        start = time.perf_counter()
        step()
        warm_start[name] = time.perf_counter() - start
    # FLOPs are a property of the computation, counted once per side on an eager fp32 step.
    flops = {"sslframe": step_flops(steps["sslframe eager"]), "lightly": step_flops(steps["lightly fp32"])}
    times = interleaved_step_times(steps, args.repeats, args.steps, args.warmup, device)
    rows = []
    for name, values in times.items():
        side, variant = name.split(" ", 1)
        precision = "bf16" if "bf16" in variant else "fp32"
        step_s = median(values)
        rows.append(
            {
                "case": case.name,
                "side": side,
                "variant": variant,
                "images_per_s": case.batch / step_s,
                "step_s": step_s,
                "step_s_min": min(values),
                "step_s_max": max(values),
                "first_step_s": warm_start[name] + build_s.get(name, 0.0),
                "gflop_per_step": flops[side] / 1e9,
                "precision": precision,
                "repeats": len(values),
            }
        )
    by_name = {(r["side"], r["variant"]): r for r in rows}
    eager = by_name[("sslframe", "eager")]["images_per_s"]
    best = max((r for r in rows if r["side"] == "sslframe"), key=lambda r: r["images_per_s"])
    for row in rows:
        precision = "bf16" if "bf16" in row["variant"] else "fp32"
        peer = by_name.get(("lightly", precision))
        row["vs_lightly"] = row["images_per_s"] / peer["images_per_s"] if peer and row["side"] == "sslframe" else ""
        row["vs_eager"] = row["images_per_s"] / eager
        row["best"] = "yes" if row is best else ""
    del contenders, steps
    gc.collect()
    torch._dynamo.reset()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=quick_mode(), help="smoke run (also BENCH_QUICK=1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats per contender (default 5, quick 2)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps per contender after the first")
    parser.add_argument("--name", default="", help="results name (default throughput_<device>)")
    parser.add_argument("--cases", default="", help="comma-separated case prefixes, e.g. simclr/resnet18")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    parser.add_argument("--side", type=int, default=0, help="global crop side (local: half); default 32 CPU, 160 GPU")
    args = parser.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 5)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peaks = measure_peaks(device, args.quick)
    rows: list[dict[str, Any]] = []
    wanted = {c for c in args.cases.split(",") if c}
    for case, variants, precisions in cases(device, args.quick, args.side):
        if wanted and not any(case.name.startswith(w) for w in wanted):
            continue
        if args.no_compile:  # each compiled combination without its compile, once
            trimmed = [v.replace("+compile", "") for v in variants if v != "compile"]
            variants = list(dict.fromkeys(trimmed))
        print(f"{case.name}: {', '.join(variants)} | lightly {', '.join(precisions)}", flush=True)
        rows += run_case(case, variants, precisions, device, args)
        # Written after every case, so a run stopped by a time limit keeps what it measured.
        _write(args, rows, peaks, peaks)
    path = _write(args, rows, peaks, measure_peaks(device, args.quick))
    print(path.read_text())


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], peaks: dict, peaks_after: dict) -> Path:
    # MFU against the higher of the two peak measurements: on a shared machine the lower one
    # is the contention of the moment, not the hardware.
    for row in rows:
        peak = max(peaks[row["precision"]], peaks_after[row["precision"]])
        row["mfu"] = row["gflop_per_step"] * 1e9 / row["step_s"] / peak
    notes = (
        f"{args.device}, torch.set_num_threads({args.threads}); medians of {args.repeats} interleaved repeats of "
        f"{args.steps} step(s) after {args.warmup + 1} warm-up step(s). Peak (matmul, start / end of run): fp32 "
        f"{peaks['fp32'] / 1e9:.1f} / {peaks_after['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} / "
        f"{peaks_after['bf16'] / 1e9:.1f} GFLOP/s. vs_lightly: images/s over lightly's at the same precision; "
        "first_step_s includes building (and compiling)."
    )
    columns = ["case", "side", "variant", "images_per_s", "vs_lightly", "vs_eager", "mfu", "first_step_s", "best"]
    extra = {"peaks_flops": peaks, "peaks_flops_end": peaks_after, "threads": args.threads}
    return write_results(args.name or f"throughput_{args.device}", rows, notes, columns, extra)


if __name__ == "__main__":
    main()
