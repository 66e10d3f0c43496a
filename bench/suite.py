"""``make bench``: every benchmark, each in a fresh process, then one summary.

    python bench/suite.py [--quick] [--only throughput,pipeline,...]

Sections (results in bench/results/<name>.json and .md, the summary in summary.md):
throughput (train-step images/s, lightly side by side, MFU), pipeline (data images/s and the
share of step time waiting for data; the data engineer's data_pipeline.py too when present),
scaling (memory per component, 1 vs 2 processes), strategies (DDP vs FSDP2 memory per rank),
accumulate (trainer.accumulate: step memory and time).
``--quick`` (or ``BENCH_QUICK=1``) is a smoke run of a minute or two.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, quick_mode

BENCH = Path(__file__).resolve().parent
SECTIONS: dict[str, tuple[str, list[str], list[str]]] = {
    # name -> (script, extra args in full mode, extra args in quick mode)
    "throughput": ("throughput.py", [], []),
    "pipeline": ("pipeline.py", [], []),
    "data_pipeline": ("data_pipeline.py", [], []),
    "scaling": ("scaling.py", [], []),
    "strategies": ("strategies.py", [], ["--arch", "regnet_y_400mf", "--steps", "2", "--crop", "32"]),
    "accumulate": ("accumulate.py", [], ["--crop", "32", "--batch", "8", "--accumulate", "1,2"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=quick_mode())
    parser.add_argument("--only", default="", help="comma-separated sections (default: all)")
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    env = {**os.environ, "BENCH_QUICK": "1" if args.quick else "0"}
    summary = [f"# sslframe benchmarks{' (quick)' if args.quick else ''}", ""]
    failed = []
    for name in chosen:
        script, full, quick = SECTIONS[name]
        if not (BENCH / script).exists():
            summary.append(f"- {name}: skipped ({script} is not in this checkout)")
            continue
        start = time.monotonic()
        print(f"== {name}", flush=True)
        done = subprocess.run([sys.executable, str(BENCH / script), *(quick if args.quick else full)], env=env)
        took = time.monotonic() - start
        summary.append(f"- {name}: {'ok' if done.returncode == 0 else 'FAILED'} in {took:.0f} s")
        if done.returncode != 0:
            failed.append(name)
    summary.append("")
    for name in chosen:
        md = RESULTS / f"{name}.md"
        if md.exists() and name not in failed:
            summary += [md.read_text().replace("# ", "## ", 1), ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text("\n".join(summary))
    print("\n".join(summary))
    if failed:
        sys.exit(f"benchmark section(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
