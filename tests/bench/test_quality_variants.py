"""Recipe variants (bench/quality_variants.py) run like rows of the quality benchmark, with their
overrides applied, beside the recipe's own rows, and are not run twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bench import common, quality_variants
from tests.bench.test_quality import fake_fashion_mnist


def test_a_variant_trains_with_its_overrides_and_resumes(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(quality_variants, "RESULTS", tmp_path / "results")
    idx = fake_fashion_mnist(tmp_path / "idx")
    args = ["--method", "dino", "--quick", "--idx-dir", str(idx), "--work-dir", str(tmp_path)]
    args += ["--variant", "cold teacher=method.teacher_temperature=0.03;method.student_temperature=0.2"]
    assert quality_variants.main(args) == 0

    results = json.loads((tmp_path / "results" / "quick" / "quality_variants_dino.json").read_text())
    (row,) = results["rows"]  # no recipe rows: the temporary results hold no quality.json
    assert row["variant"] == "cold teacher" and row["side"] == "ours" and row["seed"] == 0
    assert 0.0 <= row["knn20"] <= 1.0 and row["final_loss"] > 0
    (run,) = (tmp_path / "runs" / "quality-quick").glob("dino_ours_seed0_cold_teacher")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["method"]["teacher_temperature"] == 0.03 and config["method"]["student_temperature"] == 0.2
    assert "cold teacher: method.teacher_temperature=0.03" in results["notes"]

    caplog.set_level("INFO", logger="quality_variants")
    assert quality_variants.main(args) == 0
    assert "in the results already" in caplog.text


@pytest.mark.parametrize("text", ["no overrides", "name=", "=a=1", "name=a"])
def test_a_malformed_variant_is_refused(text: str) -> None:
    with pytest.raises(SystemExit, match="expected NAME=KEY=VALUE"):
        quality_variants.main(["--method", "dino", "--variant", text])


def test_a_trunk_variant_gets_its_own_random_init_baseline(tmp_path: Path, monkeypatch) -> None:
    """Side 'random init' evaluates the variant's trunk untrained: no pretraining, no loss or speed."""
    from bench import quality

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(quality_variants, "RESULTS", tmp_path / "results")
    widths = []
    built = quality.random_init_trunk

    def recording(cfg):
        widths.append(cfg.trunk.width_multiplier)
        return built(cfg)

    monkeypatch.setattr(quality, "random_init_trunk", recording)
    idx = fake_fashion_mnist(tmp_path / "idx")
    args = ["--method", "simclr", "--quick", "--idx-dir", str(idx), "--work-dir", str(tmp_path)]
    assert quality_variants.main([*args, "--sides", "random init", "--variant", "wide=trunk.width_multiplier=0.5"]) == 0

    (row,) = json.loads((tmp_path / "results" / "quick" / "quality_variants_simclr.json").read_text())["rows"]
    assert row["side"] == "random init" and row["variant"] == "wide" and widths == [0.5]
    assert row["final_loss"] is None and row["images_per_s"] is None and 0.0 <= row["knn20"] <= 1.0
    assert not (tmp_path / "runs" / "quality-quick").exists()  # nothing was pretrained
    assert "| wide | random init | 0 |" in (tmp_path / "results" / "quick" / "quality_variants_simclr.md").read_text()
    assert "| — |" in (tmp_path / "results" / "quick" / "quality_variants_simclr.md").read_text()

    # A later sitting with another variant: the notes still describe the first one.
    assert (
        quality_variants.main([*args, "--sides", "random init", "--variant", "narrow=trunk.width_multiplier=0.125"])
        == 0
    )
    results = json.loads((tmp_path / "results" / "quick" / "quality_variants_simclr.json").read_text())
    assert [r["variant"] for r in results["rows"]] == ["narrow", "wide"] and widths == [0.5, 0.125]
    assert "narrow: trunk.width_multiplier=0.125; wide: trunk.width_multiplier=0.5" in results["notes"]


def test_render_rewrites_the_table_with_the_recipe_rows_of_every_seed_in_the_file(tmp_path: Path, monkeypatch) -> None:
    """--render runs nothing; the recipe's rows are those of quality.json for each seed the variants ran,
    whichever sitting ran them (a later sitting with one seed keeps the others' recipe rows)."""
    results = tmp_path / "results"
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.setattr(quality_variants, "RESULTS", results)
    results.mkdir()
    metrics = {"knn20": 0.8, "knn200": 0.75, "linear": 0.79, "final_loss": 6.1}
    recipe = [
        {"method": "dino", "side": side, "seed": seed, "budget": 4, **metrics, "commit": "abc"}
        for seed in (0, 1, 2)
        for side in ("ours", "lightly")
    ]
    (results / "quality.json").write_text(json.dumps({"rows": recipe}))
    variant = [
        {"variant": "warm", "overrides": ["method.teacher_temperature=0.05"], "side": "ours", "seed": s, **metrics}
        for s in (0, 1)
    ]
    sitting = {"command": "python bench/quality_variants.py --variant warm=...", "commit": "def", "machine": {"m": 1}}
    (results / "quality_variants_dino.json").write_text(json.dumps({"rows": variant, **sitting}))

    def no_runs(*_args, **_kwargs):
        raise AssertionError("--render pretrained a row")

    monkeypatch.setattr(quality_variants.quality, "run_row", no_runs)
    assert quality_variants.main(["--method", "dino", "--render", "--seeds", "1"]) == 0
    rewritten = json.loads((results / "quality_variants_dino.json").read_text())
    assert {k: rewritten[k] for k in sitting} == sitting  # where the rows were measured, not the rewrite
    rows = rewritten["rows"]
    copied = [(r["side"], r["seed"]) for r in rows if r["variant"] == quality_variants.RECIPE]
    assert sorted(copied) == [("lightly", 0), ("lightly", 1), ("ours", 0), ("ours", 1)]  # not seed 2
    assert [r["seed"] for r in rows if r["variant"] == "warm"] == [0, 1]
    assert "warm: method.teacher_temperature=0.05" in (results / "quality_variants_dino.md").read_text()


def test_nothing_to_run_is_refused() -> None:
    with pytest.raises(SystemExit, match="at least one --variant"):
        quality_variants.main(["--method", "dino"])
