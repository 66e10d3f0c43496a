"""README's result tables are generated from the committed result files, never typed by hand."""

from __future__ import annotations

from bench import readme


def test_readme_tables_are_what_the_committed_results_give() -> None:
    assert readme.main(["--check"]) == 0, "README.md is stale: run python bench/readme.py"


MACHINE = {"cpu_model": "Some CPU", "cpu_count": 2, "torch": "2.x"}


def quality_row(
    method: str, side: str, knn20: float, speed: float | None = None, seed: int = 0, budget: int = 8
) -> dict:
    """A row of bench/results/quality.json with made-up figures (k=200 and linear derived from k=20)."""
    extra = {"images_per_s": speed, "commit": "abc1234", "date": "2026-12-02 10:00:00"} if speed else {}
    return {"method": method, "side": side, "seed": seed, "budget": budget, "knn20": knn20, "knn200": knn20 - 0.02,
            "linear": knn20 + 0.01, **extra}  # fmt: skip


def test_quality_table_reports_both_sides_and_the_baselines() -> None:
    data = {
        "machine": MACHINE,
        "rows": [
            quality_row("raw pixels", "raw pixels", 0.857),
            quality_row("simclr", "random init", 0.80),
            quality_row("simclr", "ours", 0.84, 900.0),
            quality_row("simclr", "ours", 0.86, 1100.0, seed=1),
            quality_row("simclr", "lightly", 0.83, 400.0),
            quality_row("mocov3", "ours", 0.82, 800.0),
        ],
    }
    table = readme.quality(data)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    # Mean ± sample std over seeds (0.84, 0.86), lightly's single seed; the images/s ratio of the
    # seed both sides ran (900 / 400), saying which seed it is.
    assert "| 0.850 ± 0.014 | 0.830 |" in lines["simclr"]
    assert "| 900 / 400 (**2.25x**) (seed 0, Some CPU) |" in lines["simclr"]
    assert "not in lightly" in lines["mocov3"]
    assert lines["raw pixels"].startswith("| raw pixels | 0.857 |")
    assert "8 epochs" in table and "Some CPU" in table and "abc1234" in table


def test_rows_at_other_budgets_get_their_own_table() -> None:
    """A longer run of one method does not replace the benchmark's table (the budget most methods
    ran at); it is listed below it beside its baselines at that budget."""

    data = {
        "machine": MACHINE,
        "rows": [
            quality_row("raw pixels", "raw pixels", 0.857, budget=4),
            quality_row("simclr", "random init", 0.80, budget=4),
            quality_row("simclr", "ours", 0.83, 900.0, budget=4),
            quality_row("mocov2", "ours", 0.82, 1000.0, budget=4),
            quality_row("raw pixels", "raw pixels", 0.857, budget=16),
            quality_row("simclr", "random init", 0.80, budget=16),
            quality_row("mocov2", "random init", 0.80, budget=16),  # no mocov2 run at 16: not listed
            {**quality_row("simclr", "ours", 0.87, 950.0, budget=16), "commit": "def5678", "date": "2026-12-03"},
        ],
    }
    table = readme.quality(data)
    main, longer = table.split("The same recipes at other budgets")
    assert "4 epochs" in main and "| mocov2 | 0.820 |" in main and "| simclr | 0.830 |" in main
    assert "Above the raw pixels: none" in main  # read off the 4-epoch rows only
    # The main table's footer names its own runs' commits and dates, the longer table its own.
    assert "commits abc1234 " in main and "def5678" not in main and "to 2026-12-02," in main
    assert "Commits def5678." in longer
    assert "| 16 | simclr | ours | 1 | 0.870 | 0.850 | 0.880 | 950 |" in longer
    assert "| 16 | simclr | random init | 1 | 0.800 |" in longer
    assert "| 16 | raw pixels | raw pixels | 1 | 0.857 |" in longer
    # The longer budget's own read-off, against its baselines (0.87 - 0.80; 0.88 - 0.867 linear) and
    # against the method's own run at the benchmark's budget (0.87 - 0.83).
    readoff = (
        "Read off the 16-epoch rows (kNN k = 20, points): at least 5 points over the same network at "
        "random init: simclr (+7.0); fewer: none. Above the raw pixels: simclr; under the linear probe "
        "instead (ours' mean against the same probe on the pixels): simclr (+1.3). Against the same "
        "method's 4-epoch rows (ours, the same seeds): simclr (+4.0)."
    )
    assert readoff in longer
    assert "mocov2" not in longer


def test_other_budgets_never_average_speeds_across_machines() -> None:
    """Seeds of a longer run measured on two machines: one images/s figure per machine (the mean
    of that machine's seeds), not a mean of the two machines' speeds."""
    fast = {**MACHINE, "cpu_model": "Fast CPU"}
    slow = {**MACHINE, "cpu_model": "Slow CPU"}
    data = {
        "machine": MACHINE,
        "rows": [
            quality_row("simclr", "ours", 0.83, 900.0, budget=4),
            quality_row("mocov2", "ours", 0.82, 900.0, budget=4),
            {**quality_row("simclr", "ours", 0.86, 1000.0, seed=0, budget=16), "machine": fast},
            {**quality_row("simclr", "ours", 0.86, 1200.0, seed=1, budget=16), "machine": fast},
            {**quality_row("simclr", "ours", 0.86, 600.0, seed=2, budget=16), "machine": slow},
        ],
    }
    longer = readme.quality(data).split("The same recipes at other budgets")[1]
    row = next(line for line in longer.splitlines() if line.startswith("| 16 | simclr | ours |"))
    assert row.endswith("| 1100 on Fast CPU; 600 on Slow CPU |"), row


def test_speed_ratio_pairs_each_seed_on_one_machine() -> None:
    """Seeds run on different machines: images/s are compared seed by seed where both sides ran
    on one machine, on the machine holding most such pairs, never averaged across machines."""
    fast = {**MACHINE, "cpu_model": "Fast CPU"}
    slow = {**MACHINE, "cpu_model": "Slow CPU"}

    def on(machine: dict, row: dict) -> dict:
        return {**row, "machine": machine}

    data = {
        "machine": MACHINE,
        "rows": [
            on(fast, quality_row("dino", "ours", 0.78, 600.0, seed=0)),
            on(fast, quality_row("dino", "lightly", 0.80, 300.0, seed=0)),
            on(slow, quality_row("dino", "ours", 0.79, 320.0, seed=1)),
            on(slow, quality_row("dino", "lightly", 0.80, 200.0, seed=1)),
            on(slow, quality_row("dino", "ours", 0.77, 340.0, seed=2)),
            on(slow, quality_row("dino", "lightly", 0.79, 200.0, seed=2)),
            # Each side on a machine of its own: no ratio.
            on(fast, quality_row("byol", "ours", 0.81, 800.0)),
            on(slow, quality_row("byol", "lightly", 0.83, 500.0)),
        ],
    }
    table = readme.quality(data)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    # Seeds 1 and 2 on the slow CPU: (320 + 340) / 2 = 330 against 200.
    assert "| 330 / 200 (**1.65x**) (seeds 1, 2, Slow CPU) |" in lines["dino"]
    assert "| 800 / 500 (different machines) |" in lines["byol"]
    # The targets line compares the same pairs, and leaves out a method with no pair.
    targets = next(line for line in table.splitlines() if line.startswith("Read off"))
    assert "at least as fast as lightly: dino; slower: none" in targets


def test_curation_summary_compares_subsets_on_the_seeds_they_share() -> None:
    """A curated subset run on fewer seeds than the random one is compared with the random subset's
    runs of the same seeds only (here seed 0: 0.78 - 0.76 = +2.0 points), not with its mean over
    all seeds (0.73, which would read +5.0), and the summary says which seeds it ran."""

    def row(subset: str, seed: int, knn20: float) -> dict:
        return {"subset": subset, "seed": seed, "knn20": knn20, "knn20_rare": knn20, "linear": knn20}

    data = {
        "machine": MACHINE,
        "columns": ["subset", "seed", "knn20"],
        "rows": [row("random", 0, 0.76), row("random", 1, 0.70), row("dedup + balance", 0, 0.78)],
    }
    text = readme.curation(data)
    assert "random: knn20 0.730 ± 0.042" in text
    assert "dedup + balance: knn20 0.780, knn20_rare 0.780, linear 0.780 (seed 0 only) (knn20 +2.0," in text
    assert "+5.0" not in text


def test_quality_targets_compare_each_pair_on_the_seeds_both_ran() -> None:
    # ours ran seed 0 only; the random-init baseline and lightly have a second seed. The gains are
    # taken on seed 0: 0.84 - 0.80 and 0.84 - 0.83, not against the two-seed means (0.75, 0.78).
    data = {
        "machine": MACHINE,
        "rows": [
            quality_row("simclr", "random init", 0.80),
            quality_row("simclr", "random init", 0.70, seed=1),
            quality_row("simclr", "ours", 0.84, 900.0),
            quality_row("simclr", "lightly", 0.83, 400.0),
            quality_row("simclr", "lightly", 0.73, 400.0, seed=1),
        ],
    }
    line = readme.quality_targets(data, 8)
    assert "fewer: simclr (+4.0)" in line
    # No raw-pixel row: neither kNN nor linear probe is compared with it.
    assert "Above the raw pixels: none; under the linear probe instead" in line
    assert "within 0.5 points): simclr (+1.0)" in line
    table = readme.quality(data)
    row = next(x for x in table.splitlines() if x.startswith("| simclr"))
    assert "| 0.800 / " in row and "0.750" not in row


def test_quality_targets_time_each_methods_pair_of_runs() -> None:
    """A method's two pretraining runs (ours and lightly's, one machine) are timed against the
    benchmark's half hour; a method without a lightly side is timed alone."""

    def timed(row: dict, minutes: float) -> dict:
        return {**row, "wall_s": 60.0 * minutes}

    data = {
        "machine": MACHINE,
        "rows": [
            timed(quality_row("simclr", "ours", 0.84, 900.0), 10),
            timed(quality_row("simclr", "ours", 0.84, 900.0, seed=1), 12),
            timed(quality_row("simclr", "lightly", 0.83, 400.0), 14),
            timed(quality_row("simclr", "lightly", 0.83, 400.0, seed=1), 16),
            timed(quality_row("mae", "ours", 0.80, 190.0), 21),
            timed(quality_row("mae", "lightly", 0.80, 170.0), 24),
            timed(quality_row("ijepa", "ours", 0.66, 43.0), 94),
        ],
    }
    line = readme.quality_targets(data, 8)
    # simclr: mean of ours' (11) plus mean of lightly's (15).
    assert "within 30 minutes, on the machine of that speed comparison: simclr (26 min);" in line
    assert "longer: mae (45 min), ijepa (94 min)." in line


def test_quality_targets_read_the_linear_probe_against_the_raw_pixels_too() -> None:
    """kNN and the linear probe are each compared with the same protocol on the pixels: a method
    below the pixels under kNN can pass them under the linear probe (mean of ours' seeds)."""
    data = {
        "machine": MACHINE,
        "rows": [
            {**quality_row("raw pixels", "raw pixels", 0.857), "linear": 0.839},
            {**quality_row("simclr", "ours", 0.84, 900.0), "linear": 0.845},
            {**quality_row("simclr", "ours", 0.84, 900.0, seed=1), "linear": 0.841},
            {**quality_row("mocov2", "ours", 0.86, 900.0), "linear": 0.830},
            # Above by less than the 0.1 points the line shows: not listed as above.
            {**quality_row("mae", "ours", 0.80, 190.0), "linear": 0.8394},
        ],
    }
    line = readme.quality_targets(data, 8)
    assert "Above the raw pixels: mocov2; under the linear probe instead" in line
    assert "probe on the pixels): simclr (+0.4). Ours at or above" in line


def test_precise_bn_line_groups_recipes_sharing_a_trunk_and_lists_pretrained_readings() -> None:
    def precise(knn20: float) -> dict:
        return {"knn20": knn20, "knn200": knn20 - 0.02, "linear": knn20 + 0.01, "images": 60000}

    rows = []
    for method in ("simclr", "mocov2"):  # one trunk, seeds 0 and 1: named together
        for seed, (plain, recal) in enumerate(((0.80, 0.70), (0.78, 0.68))):
            rows.append({**quality_row(method, "random init", plain, seed=seed), "precise_bn": precise(recal)})
    rows.append({**quality_row("mae", "random init", 0.63), "precise_bn": None})
    rows.append({**quality_row("simclr", "ours", 0.84, 900.0, seed=2), "precise_bn": precise(0.845)})
    rows.append(quality_row("simclr", "ours", 0.83, 900.0))  # read without it: not listed
    line = readme.precise_bn_line({"machine": MACHINE, "rows": rows}, 8)
    assert "at random init: simclr, mocov2 (seeds 0, 1): kNN k=20 0.790 ± 0.014 → 0.690 ± 0.014;" in line
    assert "(no batch norm in the trunk of mae)" in line
    assert "Pretrained (kNN k=20): simclr ours seed 2 0.840 → 0.845 (linear 0.850 → 0.855)." in line
    assert readme.precise_bn_line({"machine": MACHINE, "rows": [quality_row("simclr", "ours", 0.8, 9.0)]}, 8) == ""
    # The quality section carries it under the read-off line.
    assert line in readme.quality({"machine": MACHINE, "rows": rows})


def test_other_budgets_compare_ours_and_lightly_on_shared_seeds_and_one_machine() -> None:
    """A longer budget with a lightly side gets the peer read-off of the benchmark's budget: the
    kNN gap on the seeds both sides ran (a seed only ours ran is left out), and speeds compared
    only where a seed of each side ran on one machine."""
    fast = {**MACHINE, "cpu_model": "Fast CPU"}
    slow = {**MACHINE, "cpu_model": "Slow CPU"}

    def at16(method: str, side: str, knn20: float, speed: float, seed: int, machine: dict) -> dict:
        return {**quality_row(method, side, knn20, speed, seed=seed, budget=16), "machine": machine}

    data = {
        "machine": MACHINE,
        "rows": [
            quality_row("mocov2", "ours", 0.83, 700.0, budget=4),
            quality_row("mocov2", "lightly", 0.82, 400.0, budget=4),
            quality_row("byol", "ours", 0.81, 500.0, budget=4),
            quality_row("simclr", "ours", 0.83, 800.0, budget=4),  # 4 epochs: the benchmark's budget
            at16("mocov2", "ours", 0.857, 900.0, 0, fast),
            at16("mocov2", "ours", 0.866, 650.0, 1, slow),  # no lightly seed 1: not in the gap
            at16("mocov2", "lightly", 0.852, 360.0, 0, slow),
            at16("byol", "ours", 0.84, 420.0, 0, slow),
            at16("byol", "lightly", 0.85, 300.0, 0, slow),
        ],
    }
    longer = readme.quality(data).split("The same recipes at other budgets")[1]
    readoff = next(line for line in longer.splitlines() if line.startswith("Read off the 16-epoch rows"))
    # mocov2: 0.857 - 0.852 on seed 0; byol: 0.84 - 0.85 (more than 0.5 below).
    assert "Ours at or above lightly's (within 0.5 points): mocov2 (+0.5); below: byol (-1.0)." in readoff
    # byol's seed 0 ran on one machine (420 against 300); mocov2's sides on two machines.
    assert "Ours at least as fast as lightly: byol; slower: none." in readoff
    assert readoff.endswith("Speed not compared (the two sides ran on different machines): mocov2.")
    # Without a lightly row at that budget the read-off says nothing of lightly.
    data["rows"] = [r for r in data["rows"] if not (r["budget"] == 16 and r["side"] == "lightly")]
    longer = readme.quality(data).split("The same recipes at other budgets")[1]
    assert "lightly" not in longer.split("Read off the 16-epoch rows")[1]
