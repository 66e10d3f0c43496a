#!/usr/bin/env bash
# The demo behind `make demo`: SwAV pretraining on Fashion-MNIST (CPU), then kNN evaluation of
# the pretrained trunk, of the same trunk at random initialisation and of the raw pixels, then the
# run's pictures.
set -euo pipefail
PY=${1:-python}
RUN=runs/quickstart-$(date +%Y%m%d-%H%M%S)
echo "== pretraining SwAV (config=quickstart) into $RUN"
"$PY" tools/train.py config=quickstart run.dir="$RUN" monitor.knn_every=100
echo "== kNN evaluation on the Fashion-MNIST test split"
"$PY" tools/eval.py knn checkpoint="$RUN" data=fashion_mnist
"$PY" tools/eval.py knn checkpoint="$RUN" data=fashion_mnist eval.random_init=true
"$PY" tools/eval.py knn checkpoint="$RUN" data=fashion_mnist eval.raw_pixels=true
"$PY" - "$RUN" <<'PYEOF'
import json, sys
run = sys.argv[1]
ours = json.load(open(f"{run}/eval/knn.json"))["top1"]
rand = json.load(open(f"{run}/eval/knn_random_init.json"))["top1"]
raw = json.load(open(f"{run}/eval/knn_raw_pixels.json"))["top1"]
print()
print("kNN top-1 on the 10k Fashion-MNIST test images (weighted, T=0.07):")
for k in ours:
    print(f"  k={k:>3}: pretrained {ours[k]:.4f}   same network at random init {rand[k]:.4f}   raw pixels {raw[k]:.4f}")
print(f"run dir:      {run}")
print(f"TensorBoard:  .venv/bin/tensorboard --logdir {run}/tensorboard")
PYEOF
echo "== pictures (loss and learning rate, online kNN, collapse monitor, test-set embedding map)"
"$PY" tools/plot.py "$RUN"
