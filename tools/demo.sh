#!/usr/bin/env bash
# The demo behind `make demo`: SimCLR pretraining on Fashion-MNIST (CPU; the recipe of the quality
# benchmark, configs/config/fmnist_simclr.yaml, whose SimCLR row scored best there per minute),
# then kNN evaluation of the pretrained trunk, of the same trunk at random initialisation and of
# the raw pixels, then the run's pictures. `$RUN/demo.json` records the three results, the time
# taken and the machine (README's demo figures are generated from a committed copy of it).
set -euo pipefail
PY=${1:-python}
RUN=runs/demo-$(date +%Y%m%d-%H%M%S)
START=$(date +%s)
echo "== pretraining SimCLR (config=fmnist_simclr) into $RUN"
"$PY" tools/train.py config=fmnist_simclr run.dir="$RUN" monitor.knn_every=117
TRAINED=$(date +%s)
echo "== kNN evaluation on the Fashion-MNIST test split"
"$PY" tools/eval.py knn checkpoint="$RUN" data=fashion_mnist
"$PY" tools/eval.py knn checkpoint="$RUN" data=fashion_mnist eval.random_init=true
"$PY" tools/eval.py knn checkpoint="$RUN" data=fashion_mnist eval.raw_pixels=true
"$PY" - "$RUN" "$START" "$TRAINED" <<'PYEOF'
import json, sys, time
sys.path.insert(0, ".")
from bench.common import machine, provenance
run, start, trained = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
results = {name: json.load(open(f"{run}/eval/knn{suffix}.json"))["top1"]
           for name, suffix in (("pretrained", ""), ("random_init", "_random_init"), ("raw_pixels", "_raw_pixels"))}
summary = {**provenance(), "command": "make demo", "machine": machine(), "config": "fmnist_simclr",
           "train_seconds": trained - start, "seconds_before_pictures": int(time.time()) - start, "knn": results}
json.dump(summary, open(f"{run}/demo.json", "w"), indent=1)
print()
print("kNN top-1 on the 10k Fashion-MNIST test images (weighted, T=0.07):")
for k in results["pretrained"]:
    print(f"  k={k:>3}: pretrained {results['pretrained'][k]:.4f}   same network at random init "
          f"{results['random_init'][k]:.4f}   raw pixels {results['raw_pixels'][k]:.4f}")
print(f"run dir:      {run}")
print(f"TensorBoard:  .venv/bin/tensorboard --logdir {run}/tensorboard")
PYEOF
echo "== pictures (loss and learning rate, online kNN, collapse monitor, test-set embedding map)"
"$PY" tools/plot.py "$RUN"
