"""Recipe variants on the quality benchmark's protocol: what one change to a method's recipe does.

    python bench/quality_variants.py --method dino --seeds 0,1 \\
        --variant "teacher temperature 0.04 throughout=method.teacher_temperature=0.04" \\
        [--sides ours,lightly,"random init"] [--results quality_variants_dino] [--quick]

Each ``--variant "NAME=KEY=VALUE[;KEY=VALUE...]"`` is a set of config overrides applied on top of
``configs/config/fmnist_<method>.yaml``, for both sides where both are asked for (lightly's side
reads the same recipe). Every variant and seed is pretrained and evaluated exactly as a row of
``bench/quality.py`` (same budget, data, kNN and linear probe); the recipe's own rows for the same
seeds are copied from ``bench/results/quality.json`` beside them, lightly's as well as ours (the
reference a variant of ours is run to approach). A variant that sets a key lightly's side takes from
lightly's example instead of the recipe (``bench.quality_lightly.FIXED_BY_EXAMPLE``: its named heads'
batch norm and activation, SimCLR's view batches) is refused for that side before anything runs: it
would change ours only. Results go to
``bench/results/<results>.json`` and ``.md``; a variant and seed already there is not run again, so
a study can be completed over several sittings. ``--render`` runs nothing and rewrites the results from
their rows (after the recipe's own rows in quality.json changed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import quality  # noqa: E402
from bench.common import RESULTS, git_commit, machine, write_results  # noqa: E402
from bench.quality_lightly import refuse_fixed_overrides  # noqa: E402
from sslframe.data import fashion_mnist  # noqa: E402

log = logging.getLogger("quality_variants")
RECIPE = "recipe (quality.json)"
COLUMNS = ["variant", "side", "seed", "knn20", "knn200", "linear", "final_loss"]
# The collapse monitor's last reading (ours only): shown where a row of the file has it.
COLLAPSE = ["embedding_std", "effective_rank"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=KEY=VALUE[;KEY=VALUE...]`` -> (name, overrides)."""
    name, sep, rest = text.partition("=")
    overrides = [o.strip() for o in rest.split(";") if o.strip()]
    if not sep or not name.strip() or not overrides or any("=" not in o for o in overrides):
        raise SystemExit(f"--variant {text!r}: expected NAME=KEY=VALUE[;KEY=VALUE...]")
    return name.strip(), overrides


def recipe_rows(method: str, seeds: list[int], sides: list[str], budget: int) -> list[dict[str, Any]]:
    """The recipe's own rows for these seeds, from the quality benchmark's results."""
    results = quality.load_results(RESULTS / "quality.json")
    return [
        {
            "variant": RECIPE,
            "overrides": [],
            **{k: r.get(k) for k in ("side", "seed", *COLUMNS[3:], *COLLAPSE, "commit")},
        }
        for r in results["rows"]
        if r["method"] == method and r["side"] in sides and r["seed"] in seeds and r["budget"] == budget
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, choices=quality.METHODS)
    parser.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE[;KEY=VALUE...]")
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: rewrite the results' JSON and table from their rows and quality.json's recipe rows",
    )
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sides", default="ours", help="ours, lightly, 'random init' (the variant's trunk untrained)")
    parser.add_argument("--budget", type=int, default=quality.DEFAULT_BUDGET)
    parser.add_argument("--results", default=None, help="name under bench/results (default quality_variants_<method>)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps on a small subset")
    parser.add_argument("--idx-dir", type=Path, default=None, help="Fashion-MNIST IDX files (default: the package's)")
    parser.add_argument("--work-dir", type=Path, default=ROOT, help="where data/ and runs/ go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    variants = [parse_variant(v) for v in args.variant]
    if not variants and not args.render:
        raise SystemExit("give at least one --variant (or --render to rewrite the results without running)")
    seeds = [int(s) for s in quality.parse_list(args.seeds, None, "seed")]
    sides = quality.parse_list(args.sides, ("ours", "lightly", "random init"), "side")
    if "lightly" in sides and args.method not in quality.lightly_methods():
        raise SystemExit(f"lightly has no {args.method}")
    if "lightly" in sides:
        for variant, overrides in variants:
            try:
                refuse_fixed_overrides(args.method, overrides)
            except ValueError as err:
                raise SystemExit(f"--variant {variant!r}: {err}") from None
    name = args.results or f"quality_variants_{args.method}"
    if args.quick:
        name = f"quick/{name}"
    budget = 1 if args.quick else args.budget
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    stored = quality.load_results(out)
    rows = [r for r in stored["rows"] if r["variant"] != RECIPE]
    commit = git_commit()

    def save() -> None:
        # Every variant in the file, this run's and earlier sittings' (each row keeps its overrides).
        described = {r["variant"]: r["overrides"] for r in rows} | dict(variants)
        notes = (
            f"{args.method} on the quality benchmark's protocol (configs/config/fmnist_{args.method}.yaml, "
            f"{budget} epochs of Fashion-MNIST's 60k training images; kNN and linear probe on the 10k test "
            f"images), each variant a set of overrides of that recipe: "
            + "; ".join(f"{n}: {', '.join(o)}" for n, o in sorted(described.items()))
            + f". '{RECIPE}': the recipe's own rows from bench/results/quality.json. final_loss: the mean of the "
            "last 20 steps; 'random init': the variant's trunk untrained. Each row's commit and date are in the "
            "JSON."
        )
        if any(r.get("embedding_std") is not None for r in rows):
            notes += (
                " embedding_std and effective_rank: the collapse monitor's last reading in a run of ours (the "
                "per-dimension spread of the L2-normalised head outputs, and their effective rank)."
            )
        # The recipe's rows for every seed in the file, not only this sitting's.
        shown = sorted(set(seeds) | {r["seed"] for r in rows})
        ordered = recipe_rows(args.method, shown, ["ours", "lightly", *sides], budget) + sorted(
            rows, key=lambda r: (r["variant"], r["side"], r["seed"])
        )
        # A rewrite (--render) keeps the machine and command of the sitting that last measured.
        columns = COLUMNS + [c for c in COLLAPSE if any(r.get(c) is not None for r in ordered)]
        write_results(name, ordered, notes, columns=columns, measured=stored if args.render else None)

    if args.render:
        save()
        print(out.with_suffix(".md").read_text())
        return 0
    limit = quality.QUICK_IMAGES if args.quick else 0
    idx = args.idx_dir or fashion_mnist.find_idx_dir()
    data_dir = args.work_dir / "data" / ("fashion_mnist_quick" if args.quick else "fashion_mnist")
    fashion_mnist.prepare(data_dir, idx, limit=limit)
    setting = quality.Setting(
        budget=budget,
        quick=args.quick,
        work_dir=args.work_dir,
        data_dir=data_dir,
        train=quality.load_split(idx, "train", limit),
        test=quality.load_split(idx, "test", limit),
        out=out,
    )
    for variant, overrides in variants:
        tag = "".join(c if c.isalnum() else "_" for c in variant)[:40]
        for seed in seeds:
            for side in sides:
                if any(r["variant"] == variant and r["side"] == side and r["seed"] == seed for r in rows):
                    log.info("%s, %s seed %d: in the results already", variant, side, seed)
                    continue
                log.info("%s, %s seed %d: pretraining %d epochs", variant, side, seed, setting.budget)
                row = quality.run_row(args.method, side, seed, setting, overrides, tag)
                rows.append(
                    {
                        "variant": variant,
                        "overrides": overrides,
                        "side": side,
                        "seed": seed,
                        **{k: row[k] for k in ("knn20", "knn200", "linear", "final_loss", "images_per_s", "curve")},
                        **{k: row[k] for k in COLLAPSE if k in row},
                        "commit": commit,
                        "machine": machine(),
                        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                    }
                )
                save()
    save()
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
