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
    # Mean ± sample std over seeds (0.84, 0.86), lightly's single seed, the images/s ratio 1000 / 400.
    assert "| 0.850 ± 0.014 | 0.830 |" in lines["simclr"] and "(**2.50x**)" in lines["simclr"]
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
            quality_row("simclr", "ours", 0.87, 950.0, budget=16),
        ],
    }
    table = readme.quality(data)
    main, longer = table.split("The same recipes at other budgets")
    assert "4 epochs" in main and "| mocov2 | 0.820 |" in main and "| simclr | 0.830 |" in main
    assert "Above the raw pixels: none" in main  # read off the 4-epoch rows only
    assert "| 16 | simclr | ours | 1 | 0.870 | 0.850 | 0.880 | 950 |" in longer
    assert "| 16 | simclr | random init | 1 | 0.800 |" in longer
    assert "| 16 | raw pixels | raw pixels | 1 | 0.857 |" in longer
    assert "mocov2" not in longer
