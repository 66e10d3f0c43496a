"""Learning quality, side by side: every method pretrained on Fashion-MNIST by sslframe and by
lightly at one recipe and one budget, then evaluated on the 10k test images.

    python bench/quality.py [--methods simclr,swav,...] [--budget EPOCHS] [--seeds 0,1,2]
                            [--sides ours,lightly] [--device cpu|cuda|auto] [--force] [--quick]

For each method the recipe is the ready experiment ``configs/config/fmnist_<method>.yaml``
(views, heads, optimizer, schedule); both sides read it, so trunk, initial weights, views, batch,
epochs, optimizer and schedule are the same, and lightly's side uses lightly's own heads, losses,
transforms and utilities as its examples do (``bench/quality_lightly.py``). The budget is the
same for every method, in epochs of the 60k training images (images seen = budget x 60k).

Evaluation (the protocol of ``tools/eval.py knn`` and ``linear``): trunk features of the 60k
training and 10k test images at 28 px, weighted kNN (T = 0.07) at k = 20 and 200, and a linear
probe on the frozen features (batch norm without affine parameters, then a linear layer; SGD,
cosine schedule). Next to every method: raw pixels and the same network at random init.
During training both sides run the same online kNN monitor (``monitor.knn_*``), whose curves
go to ``quality_knn.png``; its time is left out of images/s (images per second of pretraining,
end to end with data loading). Each curve starts at 0 images from the monitor's reading of the
untrained network both sides start from (``monitor_knn`` of the random-init row, same seed), so
the picture shows whether the first steps lose what the random network already had. The
random-init rows are also read with precise BN (``precise_bn``: batch-norm statistics re-estimated
on the training images, as ``tools/eval.py ... eval.precise_bn_images=N`` does; ``--precise-bn``
reads the pretrained rows so as well): untrained, batch norm holds mean 0 and variance 1 and passes
activations through unnormalised, which is part of what the random network's features are.

Results are appended to ``bench/results/quality.json`` after every run (a row per method, side
and seed); a row already there is skipped unless ``--force``, so the benchmark can be completed
over several sittings. ``quality.md`` and the PNG are rewritten from the JSON each time.
``--quick`` is a smoke run (a few steps on a 512-image subset) writing to
``bench/results/quick/``; ``--idx-dir`` reads the IDX files from elsewhere than the Debian
package ``dataset-fashion-mnist``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, git_commit, machine, relative_paths, shareable_command  # noqa: E402
from sslframe.config import compose_config  # noqa: E402
from sslframe.data import fashion_mnist  # noqa: E402
from sslframe.distributed.micro_batches import running_norms  # noqa: E402
from sslframe.engine import monitors  # noqa: E402
from sslframe.eval.features import recalibrate_batch_norm  # noqa: E402
from sslframe.eval.knn import knn_accuracy  # noqa: E402
from sslframe.eval.linear import ProbeSettings, linear_probe  # noqa: E402
from sslframe.models.trunks import Trunk, build_trunk  # noqa: E402

log = logging.getLogger("quality")

# The methods in the order of the table; the ResNet ones share one trunk, MAE, I-JEPA, iBOT and
# DINOv2 a ViT.
METHODS = (
    "simclr",
    "mocov2",
    "mocov3",
    "swav",
    "deepclusterv2",
    "dino",
    "byol",
    "simsiam",
    "barlowtwins",
    "vicreg",
    "mae",
    "ijepa",
    "ibot",
    "dinov2",
)
DEFAULT_BUDGET = 4
KS = (20, 200)
# Online kNN monitor: this many evaluations over a run, on the first images of each class.
CURVE_POINTS = 8
PROBE_EPOCHS = 30
QUICK_IMAGES = 512


@dataclass
class Split:
    images: torch.Tensor  # N x 28 x 28, uint8
    labels: torch.Tensor


@dataclass
class Setting:
    """What every run of one invocation shares."""

    budget: int
    quick: bool
    work_dir: Path
    data_dir: Path
    train: Split
    test: Split
    out: Path
    # trainer.device of both sides' pretraining: auto (CUDA where there is one), cpu or cuda.
    device: str = "cpu"
    # Also evaluate each pretrained row's trunk with precise BN (``precise_bn_metrics``).
    precise_bn: bool = False


def load_split(idx_dir: Path, split: str, limit: int) -> Split:
    images_file, labels_file = fashion_mnist.FILES[split]
    images = torch.from_numpy(fashion_mnist.read_idx(idx_dir / images_file).copy())
    labels = torch.from_numpy(fashion_mnist.read_idx(idx_dir / labels_file).astype("int64"))
    if limit:
        images, labels = images[:limit], labels[:limit]
    return Split(images, labels)


def normalised(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The eval view of a 28 px image: to float in [0, 1], normalised, three channels (the image
    folder's PNGs decode to RGB with three equal channels)."""
    x = (images.float() / 255 - mean) / std
    return x[:, None].expand(-1, 3, -1, -1)


@torch.no_grad()
def trunk_features(trunk: torch.nn.Module, images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Features of ``images`` on the trunk's device, returned on the CPU (where kNN and the probe run)."""
    trunk.eval()
    device = next(trunk.parameters()).device
    parts = []
    for start in range(0, len(images), 500):
        batch = normalised(images[start : start + 500], mean, std).contiguous().to(device)
        parts.append(trunk(batch).float().flatten(1).cpu())
    return torch.cat(parts)


def feature_metrics(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> dict:
    """kNN on L2-normalised features (tools/eval.py knn) and a linear probe (tools/eval.py linear
    with eval.batch_norm=true) on the raw features."""
    knn = knn_accuracy(F.normalize(train_x, dim=1), train_y, F.normalize(test_x, dim=1), test_y, KS)["weighted"]
    probe = linear_probe(train_x, train_y, test_x, test_y, ProbeSettings(epochs=PROBE_EPOCHS, batch_norm=True))
    return {"knn20": knn["20"], "knn200": knn["200"], "linear": probe["top1"]}


def trunk_metrics(trunk: torch.nn.Module, cfg: DictConfig, setting: Setting) -> dict:
    mean, std = float(cfg.transform.mean[0]), float(cfg.transform.std[0])
    train_x = trunk_features(trunk, setting.train.images, mean, std)
    test_x = trunk_features(trunk, setting.test.images, mean, std)
    return feature_metrics(train_x, setting.train.labels, test_x, setting.test.labels)


def precise_bn_metrics(trunk: torch.nn.Module, cfg: DictConfig, setting: Setting) -> dict | None:
    """The metrics of ``trunk`` (a copy) after its batch-norm statistics are re-estimated on the
    training images under the evaluation view, in batches of the recipe's size (precise BN: what
    ``tools/eval.py ... eval.precise_bn_images=60000`` does); None for a trunk without batch norm."""
    if not running_norms(trunk):
        return None
    trunk = copy.deepcopy(trunk).eval()
    mean, std = float(cfg.transform.mean[0]), float(cfg.transform.std[0])
    device = next(trunk.parameters()).device
    images, size = setting.train.images, int(cfg.data.batch_size)
    batches = (
        normalised(images[start : start + size], mean, std).contiguous().to(device)
        for start in range(0, len(images), size)
    )
    used = recalibrate_batch_norm(trunk, batches, len(images))
    return {**trunk_metrics(trunk, cfg, setting), "images": used}


def monitor_reading(trunk: torch.nn.Module, cfg: DictConfig) -> float:
    """The online kNN monitor's top-1 for ``trunk`` (its subset and protocol, as in training)."""
    knn = monitors.OnlineKNN(trunk, cfg, torch.device("cpu"), torch.contiguous_format)
    return monitors.OnlineKNN.evaluate(knn)


def experiment(method: str, seed: int, setting: Setting, run_dir: Path, extra: Sequence[str] = ()) -> DictConfig:
    """The composed recipe of ``configs/config/fmnist_<method>.yaml`` at this budget and seed."""
    overrides = [
        f"config=fmnist_{method}",
        f"run.dir={run_dir}",
        f"data.path={setting.data_dir / 'train'}",
        f"data.val_path={setting.data_dir / 'test'}",
        f"trainer.max_epochs={setting.budget}",
        f"trainer.seed={seed}",
        f"trainer.device={setting.device}",
        "trainer.resume=never",
        "trainer.progress=false",
        "trainer.checkpoint_every=1000000",
    ]
    if setting.quick:
        overrides += ["trainer.max_steps=2", "trainer.log_every=1", "data.batch_size=64"]
        overrides += ["monitor.knn_train_per_class=5", "monitor.knn_val_per_class=5"]
    cfg = compose_config("train", [*overrides, *extra])
    steps = setting.budget * (len(setting.train.labels) // cfg.data.batch_size)
    if cfg.trainer.max_steps > 0:
        steps = min(steps, cfg.trainer.max_steps)
    cfg.monitor.knn_every = max(steps // CURVE_POINTS, 1)
    return cfg


class MonitorClock:
    """Times the online kNN monitor (left out of images/s) and records its curve, on both sides
    (they call the same ``OnlineKNN.evaluate``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.curve: list[float] = []
        self._original = monitors.OnlineKNN.evaluate

    def __enter__(self) -> MonitorClock:
        clock = self

        def timed(monitor: monitors.OnlineKNN) -> float:
            start = time.perf_counter()
            value = clock._original(monitor)
            clock.seconds += time.perf_counter() - start
            clock.curve.append(value)
            return value

        monitors.OnlineKNN.evaluate = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: Any) -> None:
        monitors.OnlineKNN.evaluate = self._original  # type: ignore[method-assign]


def run_ours(cfg: DictConfig) -> tuple[torch.nn.Module, dict]:
    from sslframe.engine.trainer import Trainer

    with MonitorClock() as clock:
        start = time.perf_counter()
        trainer = Trainer(cfg)
        result = trainer.fit()
        wall = time.perf_counter() - start
    images = result.final_step * cfg.data.batch_size
    every = cfg.monitor.knn_every
    stats = {
        "steps": result.final_step,
        "images": images,
        "wall_s": wall,
        "images_per_s": images / max(wall - clock.seconds, 1e-9),
        "final_loss": result.final_loss,
        "curve": [[every * (i + 1) * cfg.data.batch_size, v] for i, v in enumerate(clock.curve)],
        **last_collapse_reading(Path(cfg.run.dir)),
    }
    return trainer.method.trunk, stats


def last_collapse_reading(run_dir: Path) -> dict[str, float]:
    """The collapse monitor's last reading in a run of ours (``embedding_std``: per-dimension spread
    of the L2-normalised embeddings; ``effective_rank``). lightly's side has no such monitor, so its
    rows do not carry these."""
    from sslframe.eval.plots import read_metrics

    readings = [r for r in read_metrics(run_dir) if "embedding_std" in r]
    return {k: readings[-1][k] for k in ("embedding_std", "effective_rank") if k in readings[-1]} if readings else {}


def run_lightly(method: str, cfg: DictConfig) -> tuple[torch.nn.Module, dict]:
    from bench.quality_lightly import train_lightly

    with MonitorClock() as clock:
        start = time.perf_counter()
        trunk, steps, final_loss = train_lightly(method, cfg)
        wall = time.perf_counter() - start
    images = steps * cfg.data.batch_size
    every = cfg.monitor.knn_every
    stats = {
        "steps": steps,
        "images": images,
        "wall_s": wall,
        "images_per_s": images / max(wall - clock.seconds, 1e-9),
        "final_loss": final_loss,
        "curve": [[every * (i + 1) * cfg.data.batch_size, v] for i, v in enumerate(clock.curve)],
    }
    return trunk, stats


def random_init_trunk(cfg: DictConfig) -> Trunk:
    """The trunk both sides start from: built first from ``trainer.seed`` (as the Trainer does)."""
    torch.manual_seed(cfg.trainer.seed)
    return build_trunk(cfg.trunk)


def lightly_methods() -> set[str]:
    from bench.quality_lightly import LIGHTLY

    return set(LIGHTLY)


# ---------------------------------------------------------------------------------- results
def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"rows": []}


def row_key(row: dict) -> tuple:
    return row["method"], row["side"], row["seed"], row["budget"]


def save_results(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    path.with_suffix(".md").write_text(markdown(results))
    plot_curves(results, path.with_name(path.stem + "_knn.png"))


def mean_spread(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def speed_by_machine(speeds: list[float], machines: list[str]) -> str:
    """Mean images/s over seeds, one figure per machine where seeds ran on several (speeds of
    different machines are never averaged)."""
    if not speeds:
        return "—"
    by_machine: dict[str, list[float]] = {}
    for speed, where in zip(speeds, machines, strict=True):
        by_machine.setdefault(where, []).append(speed)
    if len(by_machine) == 1:
        return f"{statistics.mean(speeds):.0f}"
    return "; ".join(f"{statistics.mean(v):.0f} on {m.split(',')[0]}" for m, v in by_machine.items())


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per (method, side): metrics as mean ± std over seeds."""
    rows = results["rows"]
    budgets = sorted({r["budget"] for r in rows})
    out = []
    order = ["raw pixels", *METHODS]
    for budget in budgets:
        for method in order:
            for side in ("ours", "lightly", "random init"):
                chosen = [r for r in rows if r["method"] == method and r["side"] == side and r["budget"] == budget]
                if not chosen:
                    continue
                out.append(
                    {
                        "budget": budget,
                        "method": method,
                        "side": side,
                        "seeds": len(chosen),
                        "knn20": [r["knn20"] for r in chosen],
                        "knn200": [r["knn200"] for r in chosen],
                        "linear": [r["linear"] for r in chosen],
                        "images_per_s": [r["images_per_s"] for r in chosen if r.get("images_per_s")],
                        "machines": [row_machine(results, r) for r in chosen if r.get("images_per_s")],
                        "wall_s": [r["wall_s"] for r in chosen if r.get("wall_s")],
                        "note": chosen[0].get("note", ""),
                    }
                )
    return out


def machine_name(info: dict[str, Any]) -> str:
    return f"{info.get('cpu_model', '?')}, {info.get('cpu_count', '?')} cores, torch {info.get('torch', '?')}"


def row_machine(results: dict[str, Any], row: dict[str, Any]) -> str:
    """The machine a row ran on (rows from before rows carried one ran where the file says)."""
    return machine_name(row.get("machine") or results.get("machine", {}))


def machines_line(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """'Machine: X.', or where rows ran on several machines, the one most ran on and the rows that
    ran elsewhere."""
    by_machine: dict[str, list[str]] = {}
    for r in rows:
        label = r["method"] if r["side"] == "raw pixels" else f"{r['method']} {r['side']}"
        names = by_machine.setdefault(row_machine(results, r), [])
        if label not in names:
            names.append(label)
    main, *others = sorted(by_machine, key=lambda m: -len(by_machine[m]))
    text = f"Machine: {main}"
    for other in others:
        text += f"; except on {other}: {', '.join(by_machine[other])}"
    return text + "."


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Learning quality on Fashion-MNIST",
        "",
        "Pretrained on the 60k training images, evaluated on the 10k test images: weighted kNN (T=0.07) at",
        "k=20 and k=200 and a linear probe on frozen trunk features. Mean ± std over seeds where several ran.",
        "images/s: pretraining images per second, end to end (data loading included, online kNN excluded).",
        "",
        "| epochs | method | side | seeds | kNN k=20 | kNN k=200 | linear | images/s | minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary_rows(results):
        speed = speed_by_machine(r["images_per_s"], r["machines"])
        minutes = f"{statistics.mean(r['wall_s']) / 60:.1f}" if r["wall_s"] else "—"
        side = r["side"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(
            f"| {r['budget']} | {r['method']} | {side} | {r['seeds']} | {mean_spread(r['knn20'])} | "
            f"{mean_spread(r['knn200'])} | {mean_spread(r['linear'])} | {speed} | {minutes} |"
        )
    lines += ["", machines_line(results, results["rows"])]
    return "\n".join(lines) + "\n"


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """Online kNN top-1 over images seen, ours (solid) and lightly (dashed), one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in results["rows"] if r.get("curve")]
    if not curves:
        return
    # One budget in the picture: the benchmark's own where it ran, else the shortest.
    budgets = {r["budget"] for r in curves}
    budget = DEFAULT_BUDGET if DEFAULT_BUDGET in budgets else min(budgets)
    curves = [r for r in curves if r["budget"] == budget]
    start = {
        (r["method"], r["seed"]): r["monitor_knn"]
        for r in results["rows"]
        if r["side"] == "random init" and r["budget"] == budget and "monitor_knn" in r
    }
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20")
    for i, method in enumerate(METHODS):
        for side, style in (("ours", "-"), ("lightly", "--")):
            chosen = [r for r in curves if r["method"] == method and r["side"] == side]
            if not chosen:
                continue
            row = min(chosen, key=lambda r: r["seed"])
            points = [(0, start[(method, row["seed"])])] if (method, row["seed"]) in start else []
            points += [(p[0], p[1]) for p in row["curve"]]
            xs = [p[0] / 1000 for p in points]
            ys = [p[1] for p in points]
            ax.plot(xs, ys, style, color=colours(i), label=f"{method} ({side})")
    ax.set_xlabel("images seen (thousands)")
    ax.set_ylabel("online kNN top-1 (monitor subset)")
    ax.set_title(
        f"Fashion-MNIST, {budget} epochs: online kNN during pretraining, ours (solid) vs lightly (dashed)\n"
        "(at 0 images: the untrained network both sides start from)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------- the runs
def run_row(
    method: str, side: str, seed: int, setting: Setting, extra: Sequence[str] = (), tag: str = ""
) -> dict[str, Any]:
    """Pretrain and evaluate one row; ``extra``: overrides on top of the recipe (bench/quality_variants.py),
    whose run directory gets ``tag``. Side ``random init``: the recipe's trunk evaluated untrained (for a
    variant that changes the trunk, its own baseline)."""
    if side == "lightly":
        from bench.quality_lightly import refuse_fixed_overrides

        refuse_fixed_overrides(method, extra)
    name = f"{method}_{side}_seed{seed}" + (f"_{tag}" if tag else "")
    run_dir = setting.work_dir / "runs" / ("quality-quick" if setting.quick else "quality") / name
    cfg = experiment(method, seed, setting, run_dir, extra)
    torch.manual_seed(seed)
    if side == "random init":
        trunk, stats = random_init_trunk(cfg), {"final_loss": None, "images_per_s": None, "curve": []}
    elif side == "ours":
        trunk, stats = run_ours(cfg)
    else:
        trunk, stats = run_lightly(method, cfg)
    metrics = trunk_metrics(trunk, cfg, setting)
    if setting.precise_bn and side != "random init":
        metrics["precise_bn"] = precise_bn_metrics(trunk, cfg, setting)
    return {
        "method": method,
        "side": side,
        "seed": seed,
        "budget": setting.budget,
        **metrics,
        **stats,
        # data and run folders relative to the work dir (the results name no machine's paths)
        "config": relative_paths(OmegaConf.to_container(cfg, resolve=True), setting.work_dir),
    }


def baseline_rows(
    methods: Sequence[str], seeds: Sequence[int], setting: Setting, have: dict[tuple, dict]
) -> list[dict]:
    """Raw pixels (once) and each trunk at random init (per trunk and seed), with the online kNN
    monitor's reading of that trunk (``monitor_knn``, where the curves start) and its metrics with
    precise BN (``precise_bn``: None for a trunk without batch norm); a random-init row from before
    either reading existed gets it added."""
    rows = []
    if ("raw pixels", "raw pixels", 0, setting.budget) not in have:
        train_x = normalised(setting.train.images, 0.286, 0.353)[:, 0].flatten(1)
        test_x = normalised(setting.test.images, 0.286, 0.353)[:, 0].flatten(1)
        metrics = feature_metrics(train_x, setting.train.labels, test_x, setting.test.labels)
        rows.append({"method": "raw pixels", "side": "raw pixels", "seed": 0, "budget": setting.budget, **metrics})
    # One evaluation per trunk, views and monitor settings and seed (recipes share their trunk).
    measured: dict[str, dict] = {}
    readings: dict[str, float] = {}
    # Precise BN reads only the trunk, its seed and the normalisation (not the views or the monitor).
    precise: dict[str, dict | None] = {}
    for method in methods:
        for seed in seeds:
            old = have.get((method, "random init", seed, setting.budget))
            if old is not None and "monitor_knn" in old and "precise_bn" in old:
                continue
            cfg = experiment(method, seed, setting, setting.work_dir / "runs" / "quality-random")
            key = json.dumps([OmegaConf.to_container(cfg[k]) for k in ("trunk", "transform", "monitor")] + [seed])
            norm = [list(cfg.transform.mean), list(cfg.transform.std), cfg.data.batch_size]
            precise_key = json.dumps([OmegaConf.to_container(cfg.trunk), norm, seed])
            trunk = random_init_trunk(cfg)
            if precise_key not in precise:
                precise[precise_key] = precise_bn_metrics(trunk, cfg, setting)
            if old is not None:
                if "monitor_knn" not in old and key not in readings:
                    readings[key] = monitor_reading(trunk, cfg)
                monitor = old["monitor_knn"] if "monitor_knn" in old else readings[key]
                rows.append({**old, "monitor_knn": monitor, "precise_bn": precise[precise_key]})
                continue
            if key not in readings:
                readings[key] = monitor_reading(trunk, cfg)
            if key not in measured:
                measured[key] = {**trunk_metrics(trunk, cfg, setting), "monitor_knn": readings[key]}
            row = {"method": method, "side": "random init", "seed": seed, "budget": setting.budget, **measured[key]}
            rows.append({**row, "precise_bn": precise[precise_key]})
    return rows


def parse_list(text: str, valid: Sequence[str] | None, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if valid is not None:
        unknown = [s for s in items if s not in valid]
        if unknown:
            raise SystemExit(f"unknown {what} {', '.join(unknown)}; valid choices: {', '.join(valid)}")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="epochs of the 60k images, every method")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sides", default="ours,lightly", help="'' measures (or completes) the baselines only")
    parser.add_argument(
        "--force", action="store_true", help="pretrain rows already in the results again (baselines are kept)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda", "auto"),
        help="where both sides pretrain (rows record the machine; speed ratios only within one device)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps on a small subset")
    parser.add_argument(
        "--precise-bn",
        action="store_true",
        help="also evaluate each pretrained row with batch-norm statistics re-estimated on the training images",
    )
    parser.add_argument("--idx-dir", type=Path, default=None, help="folder of the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/quality.json)")
    parser.add_argument(
        "--work-dir", type=Path, default=ROOT, help="where data/ and runs/ go (default: the repository)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    methods = parse_list(args.methods, METHODS, "method")
    sides = parse_list(args.sides, ("ours", "lightly"), "side")
    seeds = [int(s) for s in parse_list(args.seeds, None, "seed")]
    limit = QUICK_IMAGES if args.quick else 0
    idx_dir = args.idx_dir or fashion_mnist.find_idx_dir()
    default_out = RESULTS / ("quick" if args.quick else "") / "quality.json"
    out = args.out or default_out
    data_dir = args.work_dir / "data" / ("fashion_mnist_quick" if args.quick else "fashion_mnist")
    fashion_mnist.prepare(data_dir, idx_dir, limit=limit)
    setting = Setting(
        budget=1 if args.quick else args.budget,
        quick=args.quick,
        work_dir=args.work_dir,
        data_dir=data_dir,
        train=load_split(idx_dir, "train", limit),
        test=load_split(idx_dir, "test", limit),
        out=out,
        device=args.device,
        precise_bn=args.precise_bn,
    )
    # The code of every row is the code at the start: modules are imported now, the commit read now.
    commit = git_commit()
    peers = lightly_methods() if "lightly" in sides else set()
    results = load_results(out)
    results["machine"] = machine()
    have = {row_key(r): r for r in results["rows"]}
    # Baselines (raw pixels, random init) are deterministic: measured once, --force or not.
    for row in baseline_rows(methods, seeds, setting, have):
        if row_key(row) in have:  # completed in place
            results["rows"] = [row if row_key(r) == row_key(row) else r for r in results["rows"]]
        else:
            row["machine"] = results["machine"]
            results["rows"].append(row)
    save_results(results, out)
    for method in methods:
        for seed in seeds:
            for side in sides:
                key = (method, side, seed, setting.budget)
                if side == "lightly" and method not in peers:
                    continue
                if key in have and not args.force:
                    log.info("%s %s seed %d: in the results already (--force to run again)", method, side, seed)
                    continue
                log.info("%s %s seed %d: pretraining %d epochs", method, side, seed, setting.budget)
                row = run_row(method, side, seed, setting)
                row["commit"] = commit
                row["machine"] = machine()
                arguments = argv if argv is not None else sys.argv[1:]
                row["command"] = shareable_command("bench/quality.py", arguments)
                row["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
                log.info(
                    "%s %s seed %d: kNN %.4f / %.4f, linear %.4f, %.0f images/s, %.1f min",
                    method,
                    side,
                    seed,
                    row["knn20"],
                    row["knn200"],
                    row["linear"],
                    row["images_per_s"],
                    row["wall_s"] / 60,
                )
                results["rows"] = [r for r in results["rows"] if row_key(r) != key] + [row]
                save_results(results, out)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
