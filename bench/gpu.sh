#!/usr/bin/env bash
# The first run on a GPU, within a time limit (default 8 minutes): the CUDA tests (pytest -m gpu:
# the step under torch.cuda.set_sync_debug_mode("error"), bf16 and fp16 steps, torch.compile,
# channels-last, pinned batches, NCCL with one and, on two GPUs, two processes with DDP, FSDP2 and
# SyncBatchNorm), their report in bench/results/gpu_tests.txt, then rows 1-3 of the benchmark
# (train-step images/s, lightly side by side, MFU) in bench/results/<name>.json and .md.
#
#   bash bench/gpu.sh [--quick] [--limit SECONDS] [--name NAME] [--python PATH]
#
# Without a CUDA device it says so and runs the quick CPU version of the same script, so the
# script itself can be checked anywhere.
set -euo pipefail

cd "$(dirname "$0")/.."
python=".venv/bin/python"
limit=480
name=""
quick=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick"; shift ;;
    --limit) limit="${2:?--limit needs seconds}"; shift 2 ;;
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --python) python="${2:?--python needs a path}"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/gpu.sh: unknown argument '$1' (valid: --quick, --limit, --name, --python)" >&2; exit 2 ;;
  esac
done
case "$limit" in
  ''|*[!0-9]*) echo "bench/gpu.sh: --limit must be a whole number of seconds, got '$limit'" >&2; exit 2 ;;
esac
[ -x "$python" ] || { echo "bench/gpu.sh: no Python at '$python' (run 'make install' or pass --python)" >&2; exit 2; }

if "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  device=cuda
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
else
  device=cpu
  quick="--quick"
  echo "bench/gpu.sh: no CUDA device visible to torch; running the quick CPU version instead"
fi
"$python" -c "import lightly" 2>/dev/null || echo "bench/gpu.sh: lightly is not installed; run 'make bench-deps' first" >&2

start=$(date +%s)
if [ "$device" = cuda ]; then
  mkdir -p bench/results
  # Half of the time for the tests; what they print is kept for the record.
  timeout --signal=INT --kill-after=20 $((limit / 2)) "$python" -m pytest -m gpu -q -p no:cacheprovider tests/gpu \
    2>&1 | tee bench/results/gpu_tests.txt || echo "bench/gpu.sh: GPU tests failed or ran out of time (see bench/results/gpu_tests.txt)"
fi
left=$((limit - ($(date +%s) - start)))
[ "$left" -gt 30 ] || { echo "bench/gpu.sh: no time left for the throughput rows"; exit 1; }
args=(--device "$device" $quick)
[ -n "$name" ] && args+=(--name "$name")
exec timeout --signal=INT --kill-after=20 "$left" "$python" bench/throughput.py "${args[@]}"
