#!/usr/bin/env bash
# Rows 1-3 of the benchmark (train-step images/s, lightly side by side, MFU) on a CUDA machine,
# within a time limit (default 8 minutes), writing bench/results/<name>.json and .md.
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

args=(--device "$device" $quick)
[ -n "$name" ] && args+=(--name "$name")
exec timeout --signal=INT --kill-after=20 "$limit" "$python" bench/throughput.py "${args[@]}"
