"""README's result tables, generated from the committed result files under bench/results/.

    python bench/readme.py           # rewrite the generated blocks of README.md
    python bench/readme.py --check   # exit 1 if README.md differs from what the results give

A generated block sits between ``<!-- generated:NAME -->`` and ``<!-- end:NAME -->`` in README.md;
NAME picks the renderer below and the result file it reads. Nothing between the markers is typed
by hand: edit the renderer or re-run the benchmark instead.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"


def _mean(values: list[float]) -> float:
    return statistics.mean(values)


def _cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _rows(data: dict[str, Any], method: str, side: str, budget: int) -> list[dict[str, Any]]:
    return [r for r in data["rows"] if r["method"] == method and r["side"] == side and r["budget"] == budget]


def speed_rows(
    data: dict[str, Any], ours: list[dict[str, Any]], theirs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The rows whose images/s are compared: each seed's two sides where both ran on one machine
    (a speed ratio means something only within one machine), on the machine that holds most such
    pairs; without a lightly side, ours on the machine most of its rows ran on. Also the machine,
    named only where other rows were left out for it."""
    from bench.quality import row_machine

    def seed_pairs(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
        return [
            (a, b)
            for a in rows_a
            for b in rows_b
            if a["seed"] == b["seed"] and row_machine(data, a) == row_machine(data, b)
        ]

    by_machine: dict[str, list[tuple[dict[str, Any], dict[str, Any] | None]]] = {}
    pairs: list[tuple[Any, Any]] = seed_pairs(ours, theirs) if theirs else [(r, None) for r in ours]
    for a, b in pairs:
        by_machine.setdefault(row_machine(data, a), []).append((a, b))
    if not by_machine:
        return [], [], ""
    machine = max(by_machine, key=lambda m: len(by_machine[m]))
    chosen_ours = [a for a, _ in by_machine[machine]]
    chosen_theirs = [b for _, b in by_machine[machine] if b is not None]
    complete = len(chosen_ours) == len(ours) and len(chosen_theirs) == len(theirs)
    return chosen_ours, chosen_theirs, "" if complete else machine.split(",")[0]


def speed_cell(data: dict[str, Any], ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> str:
    """images/s of ours (and lightly's, with the ratio) from ``speed_rows``."""
    fast, slow, machine = speed_rows(data, ours, theirs)
    if not fast:
        ours_speed, their_speed = (_mean([r["images_per_s"] for r in rows]) for rows in (ours, theirs))
        return f"{ours_speed:.0f} / {their_speed:.0f} (different machines)"
    cell = f"{_mean([r['images_per_s'] for r in fast]):.0f}"
    if slow:
        ratio = _mean([r["images_per_s"] for r in fast]) / _mean([r["images_per_s"] for r in slow])
        cell += f" / {_mean([r['images_per_s'] for r in slow]):.0f} (**{ratio:.2f}x**)"
    if machine:
        seeds = ", ".join(str(r["seed"]) for r in fast)
        cell += f" (seed{'s' if len(fast) > 1 else ''} {seeds}, {machine})"
    return cell


def quality(data: dict[str, Any]) -> str:
    """One line per method: ours and lightly's kNN (k=20, k=200) and linear probe, the network at
    random init, and the images/s ratio of the two sides (same machine, same invocation)."""
    from bench.quality import METHODS, lightly_methods, machines_line

    trained = [r for r in data["rows"] if r["side"] in ("ours", "lightly")]
    if not trained:
        return "(no results yet: run `make quality`)\n"
    # The benchmark's budget: the one most methods ran at (other budgets get a table of their own).
    methods_at: dict[int, set[str]] = {}
    for r in trained:
        methods_at.setdefault(r["budget"], set()).add(r["method"])
    budget = max(methods_at, key=lambda b: (len(methods_at[b]), b))
    raw = _rows(data, "raw pixels", "raw pixels", budget)
    lines = [
        "| method | kNN k=20 ours | lightly | kNN k=200 ours | lightly | linear ours | lightly | "
        "random init k=20 / k=200 / linear | seeds | images/s ours / lightly |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        ours = _rows(data, method, "ours", budget)
        if not ours:
            continue
        theirs = _rows(data, method, "lightly", budget)
        # The network at random init for the seeds ours ran (its row is one per seed).
        rand = [r for r in _rows(data, method, "random init", budget) if r["seed"] in {o["seed"] for o in ours}]
        missing = "" if theirs else ("not run yet" if method in lightly_methods() else "not in lightly")
        speed = speed_cell(data, ours, theirs)
        cells = [
            method,
            _cell([r["knn20"] for r in ours]),
            _cell([r["knn20"] for r in theirs]) if theirs else missing,
            _cell([r["knn200"] for r in ours]),
            _cell([r["knn200"] for r in theirs]) if theirs else missing,
            _cell([r["linear"] for r in ours]),
            _cell([r["linear"] for r in theirs]) if theirs else missing,
            " / ".join(_cell([r[k] for r in rand]) for k in ("knn20", "knn200", "linear")) if rand else "—",
            str(len(ours)),
            speed,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    not_run = [m for m in METHODS if not _rows(data, m, "ours", budget)]
    if raw:
        r = raw[0]
        lines.append(f"| raw pixels | {r['knn20']:.3f} | | {r['knn200']:.3f} | | {r['linear']:.3f} | | | | |")
    # The commits and dates of this table's runs (the other budgets' table names its own).
    here = [r for r in trained if r["budget"] == budget]
    commits = sorted({r.get("commit", "?") for r in here})
    dates = sorted(r.get("date", "?") for r in here)
    lines += [
        "",
        f"{budget} epochs of the 60k training images for every method ({budget * 60}k images seen), "
        f"evaluated on the 10k test images; mean ± std where several seeds ran. "
        f"{machines_line(data, [r for r in data['rows'] if r['budget'] == budget])} "
        f"Runs from {dates[0][:10]} to {dates[-1][:10]}, commits {', '.join(commits)} "
        "(`bench/results/quality.json` holds each run's command and exact config)."
        + (
            f" Not run yet: {', '.join(not_run)} (`make quality QUALITY_ARGS=--methods={','.join(not_run)}`)."
            if not_run
            else ""
        ),
        "",
        quality_targets(data, budget),
    ]
    precise = precise_bn_line(data, budget)
    if precise:
        lines += ["", precise]
    others = sorted(b for b in methods_at if b != budget)
    if others:
        lines += ["", other_budgets(data, others, budget)]
    return "\n".join(lines) + "\n"


def other_budgets(data: dict[str, Any], budgets: list[int], base: int) -> str:
    """The rows run at budgets other than the benchmark's (``base``; the same recipes, more or
    fewer epochs), each beside the random-init network and the raw pixels at that budget."""
    from bench.quality import METHODS, machines_line, row_machine, speed_by_machine

    lines = [
        "The same recipes at other budgets (same protocol):",
        "",
        "| epochs | method | side | seeds | kNN k=20 | kNN k=200 | linear | images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    chosen = []
    for budget in budgets:
        for method in [*METHODS, "raw pixels"]:
            for side in ("ours", "lightly", "random init", "raw pixels"):
                rows = _rows(data, method, side, budget)
                if not rows or (side == "random init" and not _rows(data, method, "ours", budget)):
                    continue
                chosen += rows
                timed = [r for r in rows if r.get("images_per_s")]
                # One figure per machine: speeds of different machines are never averaged.
                speed = speed_by_machine([r["images_per_s"] for r in timed], [row_machine(data, r) for r in timed])
                cells = [str(budget), method, side, str(len(rows))]
                cells += [_cell([r[k] for r in rows]) for k in ("knn20", "knn200", "linear")]
                lines.append("| " + " | ".join([*cells, speed]) + " |")
    commits = sorted({r.get("commit", "?") for r in chosen if r["side"] in ("ours", "lightly")})
    lines += ["", f"{machines_line(data, chosen)} Commits {', '.join(commits)}."]
    for budget in budgets:
        readoff = f"{baseline_targets(data, budget)} {budget_gains(data, budget, base)}"
        if any(_rows(data, method, "lightly", budget) for method in METHODS):
            readoff += f" {peer_targets(data, budget)}"
        lines += ["", f"Read off the {budget}-epoch rows (kNN k = 20, points): {readoff}"]
    return "\n".join(lines)


def budget_gains(data: dict[str, Any], budget: int, base: int) -> str:
    """What ``budget`` epochs add to (or take from) ours' kNN (k=20) at the benchmark's ``base``
    budget, method by method, on the seeds run at both."""
    from bench.quality import METHODS

    gains = []
    for method in METHODS:
        shared = _seeds(data, method, "ours", budget) & _seeds(data, method, "ours", base)
        if shared:
            gain = 100 * (_knn(data, method, "ours", budget, shared) - _knn(data, method, "ours", base, shared))
            gains.append(f"{method} ({gain:+.1f})")
    return f"Against the same method's {base}-epoch rows (ours, the same seeds): {', '.join(gains) or 'none'}."


def _knn(data: dict[str, Any], method: str, side: str, budget: int, seeds: set[int] | None = None) -> float | None:
    """Mean kNN (k=20) of ``side``'s rows at ``budget``, of the ``seeds`` given only."""
    rows = [r for r in _rows(data, method, side, budget) if seeds is None or r["seed"] in seeds]
    return _mean([r["knn20"] for r in rows]) if rows else None


def _seeds(data: dict[str, Any], method: str, side: str, budget: int) -> set[int]:
    return {r["seed"] for r in _rows(data, method, side, budget)}


def baseline_targets(data: dict[str, Any], budget: int) -> str:
    """The targets against the baselines at one budget: each method's kNN (k=20) gain over its
    random-init network (on the seeds both ran), and whether it passes the raw pixels under kNN
    and, separately, under the linear probe."""
    from bench.quality import METHODS

    raw = _rows(data, "raw pixels", "raw pixels", budget)
    gains, above_raw, above_raw_linear = [], [], []
    for method in METHODS:
        ours = _knn(data, method, "ours", budget)
        if ours is None:
            continue
        # On the seeds both rows ran: a baseline seed that ours has not run would move the gain.
        shared = _seeds(data, method, "ours", budget) & _seeds(data, method, "random init", budget)
        if shared:
            gain = 100 * (
                _knn(data, method, "ours", budget, shared) - _knn(data, method, "random init", budget, shared)
            )
            gains.append((gain, method))
        if raw and ours > raw[0]["knn20"]:
            above_raw.append(method)
        # The linear probe on the frozen trunk against the same probe on the pixels, above by at
        # least the 0.1 points the line shows.
        if raw:
            lead = 100 * (_mean([r["linear"] for r in _rows(data, method, "ours", budget)]) - raw[0]["linear"])
            if round(lead, 1) > 0:
                above_raw_linear.append(f"{method} ({lead:+.1f})")
    met = [f"{m} ({g:+.1f})" for g, m in sorted(gains, reverse=True) if g >= 5]
    missed = [f"{m} ({g:+.1f})" for g, m in sorted(gains, reverse=True) if g < 5]
    none = "none"
    return (
        f"at least 5 points over the same network at random init: {', '.join(met) or none}; fewer: "
        f"{', '.join(missed) or none}. Above the raw pixels: {', '.join(above_raw) or none}; under the "
        f"linear probe instead (ours' mean against the same probe on the pixels): "
        f"{', '.join(above_raw_linear) or none}."
    )


def quality_targets(data: dict[str, Any], budget: int) -> str:
    """The targets of the benchmark, read off the rows: kNN (k=20) gain over the random-init network,
    raw pixels, lightly's accuracy and speed; each method named where it meets or misses one."""
    from bench.quality import METHODS

    short, long = [], []  # a method's pair of pretraining runs under / over 30 minutes
    for method in METHODS:
        if _knn(data, method, "ours", budget) is None:
            continue
        # The pair's wall time on the machine its speeds are compared on (ours alone without a peer).
        timed, peer, _ = speed_rows(data, *(_rows(data, method, side, budget) for side in ("ours", "lightly")))
        walls = [[r["wall_s"] for r in rows if r.get("wall_s")] for rows in (timed, peer) if rows]
        if walls and all(walls):
            minutes = sum(_mean(w) for w in walls) / 60
            (short if minutes < 30 else long).append(f"{method} ({minutes:.0f} min)")
    none = "none"
    return (
        f"Read off these rows (kNN k = 20, points; each difference on the seeds both rows ran): "
        f"{baseline_targets(data, budget)} {peer_targets(data, budget)} A method's two "
        f"pretraining runs (ours and lightly's; ours alone where lightly has no such method) within 30 "
        f"minutes, on the machine of that speed comparison: {', '.join(short) or none}; longer: "
        f"{', '.join(long) or none}."
    )


def peer_targets(data: dict[str, Any], budget: int) -> str:
    """Ours against lightly's side at one budget, for each method with both: the kNN (k=20) gap on
    the seeds both ran (at or above within 0.5 points, or below), and which is faster where a seed
    of each side ran on one machine (a speed measured on another machine is no comparison)."""
    from bench.quality import METHODS

    behind, level, faster, slower, apart = [], [], [], [], []
    for method in METHODS:
        # On the seeds both sides ran: a peer seed that ours has not run would move the comparison.
        shared = _seeds(data, method, "ours", budget) & _seeds(data, method, "lightly", budget)
        if not shared:
            continue
        gap = 100 * (_knn(data, method, "ours", budget, shared) - _knn(data, method, "lightly", budget, shared))
        (level if gap >= -0.5 else behind).append(f"{method} ({gap:+.1f})")
        pair = (_rows(data, method, side, budget) for side in ("ours", "lightly"))
        fast, slow, _ = speed_rows(data, *pair)
        if fast and slow:
            faster_here = _mean([r["images_per_s"] for r in fast]) >= _mean([r["images_per_s"] for r in slow])
            (faster if faster_here else slower).append(method)
        else:
            apart.append(method)
    none = "none"
    text = (
        f"Ours at or above lightly's (within 0.5 points): {', '.join(level) or none}; below: "
        f"{', '.join(behind) or none}."
    )
    if faster or slower or not apart:
        text += f" Ours at least as fast as lightly: {', '.join(faster) or none}; slower: {', '.join(slower) or none}."
    if apart:
        text += f" Speed not compared (the two sides ran on different machines): {', '.join(apart)}."
    return text


def precise_bn_line(data: dict[str, Any], budget: int) -> str:
    """The random-init trunks (and any pretrained row run with ``--precise-bn``) read with their
    batch-norm statistics as they are and re-estimated on the training images (precise BN); methods
    whose random-init rows agree (one trunk, the same seeds) are named together."""
    from bench.quality import METHODS

    rows = [r for r in data["rows"] if r["budget"] == budget and "precise_bn" in r]
    if not rows:
        return ""
    groups: dict[str, list[str]] = {}
    without = []
    for method in METHODS:
        rand = [r for r in rows if r["method"] == method and r["side"] == "random init"]
        rand.sort(key=lambda r: r["seed"])
        if not rand:
            continue
        if any(r["precise_bn"] is None for r in rand):
            without.append(method)
            continue
        seeds = ", ".join(str(r["seed"]) for r in rand)
        reading = "; ".join(
            f"{name} {_cell([r[key] for r in rand])} → {_cell([r['precise_bn'][key] for r in rand])}"
            for name, key in (("kNN k=20", "knn20"), ("k=200", "knn200"), ("linear", "linear"))
        )
        groups.setdefault(f"(seeds {seeds}): {reading}", []).append(method)
    parts = [f"{', '.join(methods)} {reading}" for reading, methods in groups.items()]
    trained = [
        f"{r['method']} {r['side']} seed {r['seed']} {r['knn20']:.3f} → {r['precise_bn']['knn20']:.3f} "
        f"(linear {r['linear']:.3f} → {r['precise_bn']['linear']:.3f})"
        for r in rows
        if r["side"] in ("ours", "lightly") and r["precise_bn"]
    ]
    line = (
        "Batch-norm statistics as the network holds them → re-estimated on the 60k training images "
        "(precise BN, `tools/eval.py ... eval.precise_bn_images=60000`), mean ± std over the seeds; "
        f"at random init: {'; '.join(parts) or 'none'}"
    )
    if without:
        line += f" (no batch norm in the trunk of {', '.join(without)})"
    line += f". Pretrained (kNN k=20): {'; '.join(trained)}." if trained else "."
    return line


def table(data: dict[str, Any]) -> str:
    """A benchmark section's rows (the columns its script chose), its notes, and where they come
    from: machine, command, commit and date."""
    from bench.common import markdown_table

    machine = data.get("machine", {})
    lines = [
        markdown_table(data["rows"], data.get("columns")),
        "",
        data.get("notes", "").strip(),
        "",
        f"Measured on {machine.get('cpu_model', '?')} ({machine.get('cpu_count', '?')} cores, torch "
        f"{machine.get('torch', '?')}) with `{data.get('command', '?')}` at commit {data.get('commit', '?')}, "
        f"{data.get('date', '?')}.",
    ]
    return "\n".join(lines).strip() + "\n"


def demo(data: dict[str, Any]) -> str:
    """What ``make demo`` printed: kNN of the pretrained trunk, the same network at random init and
    the raw pixels, with the time it took and where it ran."""
    knn = data["knn"]
    machine = data.get("machine", {})
    lines = [
        "| kNN top-1 (weighted, T = 0.07) | pretrained | same network at random init | raw pixels |",
        "|---|---|---|---|",
    ]
    for k in knn["pretrained"]:
        cells = [f"{knn[name][k]:.4f}" for name in ("pretrained", "random_init", "raw_pixels")]
        lines.append(f"| k = {k} | " + " | ".join(cells) + " |")
    gaps = []
    first = next(iter(knn["pretrained"]))
    for k in knn["pretrained"]:
        gap = 100 * (knn["pretrained"][k] - knn["raw_pixels"][k])
        gaps.append(f"{abs(gap):.1f} points {'above' if gap >= 0 else 'below'} them at k = {k}")
    lines += [
        "",
        f"Against the raw pixels, the pretrained trunk is {' and '.join(gaps)}; against its own random "
        f"initialisation, {100 * (knn['pretrained'][first] - knn['random_init'][first]):+.1f} points at k = {first}.",
        "",
        f"`make demo` (`config={data.get('config', '?')}`) on {machine.get('cpu_model', '?')} "
        f"({machine.get('cpu_count', '?')} cores, torch {machine.get('torch', '?')}): pretraining took "
        f"{data['train_seconds'] / 60:.1f} min, {data['seconds_before_pictures'] / 60:.1f} min to the three "
        f"evaluations, at commit {data.get('commit', '?')}, {data.get('date', '?')}.",
    ]
    return "\n".join(lines) + "\n"


def plan_example(report: dict[str, Any]) -> str:
    """The planner's printout for the SEER 10B recipe, from the report it wrote."""
    from sslframe.planner.plan import summary

    command = "python tools/plan.py config=seer_regnet_10b plan.images=1000000000"
    return f"```\n$ {command} plan.out=bench/results/plan_seer_regnet_10b.json\n{summary(report)}\n```\n"


def curation(data: dict[str, Any]) -> str:
    """The curated subsets against the random one (kNN and probe, and what each is made of), what
    deduplication removed against what was planted, and the differences read off the rows."""
    rows, extra = data["rows"], data.get("extra", {})
    by: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault(row["subset"], []).append(row)
    seeds = sorted({r["seed"] for r in rows})
    lines = [table(data).rstrip(), ""]
    metrics = [m for m in ("knn20", "knn20_rare", "linear") if all(m in r for r in rows)]
    summary = []
    for name, group in by.items():
        cells = ", ".join(f"{m} {_cell([r[m] for r in group])}" for m in metrics)
        ran = sorted({r["seed"] for r in group})
        if ran != seeds:
            cells += f" (seed{'s' if len(ran) > 1 else ''} {', '.join(map(str, ran))} only)"
        if name != "random":
            # Against the random subset's runs of the same seeds only: seeds differ by more than
            # the subsets do, so a mean over other seeds would compare seeds, not subsets.
            base = [r for r in by["random"] if r["seed"] in ran]
            gains = ", ".join(
                f"{m} {100 * (_mean([r[m] for r in group]) - _mean([r[m] for r in base])):+.1f}" for m in metrics
            )
            cells += f" ({gains} points against the random subset, same seeds)"
        summary.append(f"{name}: {cells}")
    lines.append(
        f"Mean and spread over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} (rare: the test images of "
        f"the pool's five rarest classes): " + "; ".join(summary) + "."
    )
    dedup = extra.get("dedup")
    if dedup:
        lines.append(
            f"Deduplication ({dedup['embedding']} embedding, cosine >= {dedup['threshold']}) removed "
            f"{dedup['removed']} images: {dedup['planted_removed']} of the {dedup['planted']} planted copies "
            f"(exact: {100 * dedup['exact_recall']:.0f}%, near: {100 * dedup['near_recall']:.0f}%) and "
            f"{dedup['removed_not_planted']} the pool held twice already or that look alike at that threshold."
        )
    return "\n".join(lines) + "\n"


def curate_scale(data: dict[str, Any]) -> str:
    """Time and memory of the curation steps on a million embeddings, and the billion estimate."""
    est = data["extra"]["estimate"]
    lines = [table(data).rstrip(), ""]
    embed = "; ".join(
        f"{name} ({v['gflops_per_image']} GFLOPs an image at {v['image_size']} px): {v['gpu_hours']:,} GPU hours"
        for name, v in est["embedding"].items()
    )
    here = est["measured_here"]
    planted = data["extra"]["data"]["planted_duplicates"]
    found = "; ".join(
        f"{r['phase']} removed {r['near_duplicates_removed']:,} of the {planted:,} planted copies"
        for r in data["rows"]
        if "near_duplicates_removed" in r
    )
    lines += [
        f"{found} (the thresholds apply to exact cosines of the index's candidates).",
        "",
        f"Estimate for {est['target_images']:,} images of {est['dim']}-d embeddings ({est['assumptions']}):",
        f"- embedding pass: {embed};",
        f"- index memory: {est['index_memory_gb']['ivf_flat_float32']:,} GB as float32 vectors, "
        f"{est['index_memory_gb']['ivf_pq32_4bit']:,} GB as PQ codes (32 sub-quantisers of 4 bits: 16 bytes a "
        "vector, plus an 8-byte id);",
        f"- near-duplicate search: {est['dedup_search']['pflop']:,} PFLOP, "
        f"{est['dedup_search']['gpu_hours']:,} GPU hours;",
        f"- hierarchical k-means at the default levels {est['kmeans']['levels']}: "
        f"{est['kmeans']['gpu_hours']:,} GPU hours, the finest level {est['kmeans']['pflop_per_level'][0]:,} of "
        f"{sum(est['kmeans']['pflop_per_level']):,.1f} PFLOP (fewer finest clusters cost proportionally less).",
        f"The same FLOP counts applied to the runs above give {here['dedup_gflops_per_s']} GFLOP/s (search) and "
        f"{here['kmeans_gflops_per_s']} GFLOP/s (k-means) on this machine.",
    ]
    return "\n".join(lines) + "\n"


# NAME -> (result file under bench/results, renderer)
BLOCKS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "quality": ("quality.json", quality),
    "demo": ("demo.json", demo),
    "throughput": ("throughput_cpu.json", table),
    "data_pipeline": ("data_pipeline.json", table),
    "pipeline": ("pipeline.json", table),
    "scaling": ("scaling.json", table),
    "strategies": ("strategies.json", table),
    "accumulate": ("accumulate.json", table),
    "quality_variants_byol": ("quality_variants_byol.json", table),
    "quality_variants_dino": ("quality_variants_dino.json", table),
    "quality_variants_simsiam": ("quality_variants_simsiam.json", table),
    "quality_variants_simclr": ("quality_variants_simclr.json", table),
    "quality_variants_simclr_16": ("quality_variants_simclr_16.json", table),
    "quality_variants_mocov2": ("quality_variants_mocov2.json", table),
    "quality_variants_swav": ("quality_variants_swav.json", table),
    "plan_seer_10b": ("plan_seer_regnet_10b.json", plan_example),
    "curation": ("curation.json", curation),
    "curation_small": ("curation_small.json", curation),
    "curation_digits": ("curation_digits.json", curation),
    "curation_digits_mae": ("curation_digits_mae.json", curation),
    "curate_scale": ("curate_scale.json", curate_scale),
}


def render(text: str) -> str:
    """``text`` with every generated block rewritten from its result file."""
    for name, (filename, renderer) in BLOCKS.items():
        path = RESULTS / filename
        if not path.is_file():
            continue
        body = renderer(json.loads(path.read_text()))
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end:{name} -->)", re.S)
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if README.md is not what the results give")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    current = README.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md is stale: run python bench/readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
