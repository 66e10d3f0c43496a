"""Why ours BYOL trails lightly's in the quality benchmark: the loss's scale.

    python bench/byol_loss_scale.py [--scale 0.25] [--seed 0]

Ours is BYOL's loss as the paper writes it, ``2 - 2 cos`` for each of the two view pairs, summed
(solo-learn's too); lightly's example halves the mean negative cosine of the two pairs, which is
a quarter of our gradient. Under LARS the trust ratio cancels that scale for the weights it adapts,
but biases and norm parameters are excluded from it (``optim.exclude_bias_and_norm``), so in ours
they take four times lightly's step. This runs ours with the loss multiplied by ``--scale`` (0.25:
lightly's scale) on the quality benchmark's BYOL recipe and budget and evaluates it the same way
(bench/quality.py); the result goes to bench/results/byol_loss_scale.json and README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import sslframe.methods.byol as byol
    from bench import quality
    from bench.common import write_results
    from sslframe.data import fashion_mnist

    paper_loss = byol.byol_regression_loss
    byol.byol_regression_loss = lambda p, z: args.scale * paper_loss(p, z)
    idx = fashion_mnist.find_idx_dir()
    data_dir = ROOT / "data" / "fashion_mnist"
    fashion_mnist.prepare(data_dir, idx, limit=0)
    setting = quality.Setting(
        budget=quality.DEFAULT_BUDGET,
        quick=False,
        work_dir=ROOT / "runs" / "byol_loss_scale",
        data_dir=data_dir,
        train=quality.load_split(idx, "train", 0),
        test=quality.load_split(idx, "test", 0),
        out=ROOT / "runs" / "byol_loss_scale" / "unused.json",
    )
    row = quality.run_row("byol", "ours", args.seed, setting)
    results = quality.load_results(quality.RESULTS / "quality.json")
    rows = [
        {"run": "ours, loss x1 (quality.json)", **_metrics(quality.summary_rows(results), "ours")},
        {"run": "lightly (quality.json)", **_metrics(quality.summary_rows(results), "lightly")},
        {
            "run": f"ours, loss x{args.scale:g} (this run)",
            "knn20": round(row["knn20"], 4),
            "knn200": round(row["knn200"], 4),
            "linear": round(row["linear"], 4),
        },
    ]
    notes = (
        f"BYOL on the quality benchmark's recipe (configs/config/fmnist_byol.yaml, {setting.budget} epochs, seed "
        f"{args.seed}): ours with its loss scaled by {args.scale:g} (lightly's scale) against the two rows of "
        "bench/results/quality.json. Scaling the loss changes only the step of the parameters LARS does not adapt "
        "(biases and norms), by the same factor."
    )
    print(write_results("byol_loss_scale", rows, notes, columns=["run", "knn20", "knn200", "linear"]).read_text())


def _metrics(summary: list[dict], side: str) -> dict:
    row = next(r for r in summary if r["method"] == "byol" and r["side"] == side)
    return {k: round(sum(row[k]) / len(row[k]), 4) for k in ("knn20", "knn200", "linear")}


if __name__ == "__main__":
    main()
