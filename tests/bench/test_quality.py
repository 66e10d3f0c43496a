"""The quality benchmark (bench/quality.py) runs end to end in its smoke mode, on Fashion-MNIST
IDX files generated here: both sides train from the same initial trunk, every row lands in the
results with what the README table needs, and rows already there are not run again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lightly", reason="lightly is a benchmark dependency (make bench-deps; make test installs it)")

from bench import quality
from tests.data.test_fashion_mnist import write_idx


def fake_fashion_mnist(root: Path, n: int = 160) -> Path:
    """Ten classes told apart by where a bright bar lies, with noise."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 * label + 4 : 2 * label + 8, 4:24] = 230
    root.mkdir(parents=True, exist_ok=True)
    for images_file, labels_file in quality.fashion_mnist.FILES.values():
        write_idx(root / images_file, images)
        write_idx(root / labels_file, labels)
    return root


def test_quick_run_writes_every_row_and_resumes(tmp_path: Path, caplog) -> None:
    idx = fake_fashion_mnist(tmp_path / "idx")
    out = tmp_path / "results" / "quality.json"
    args = ["--quick", "--methods", "simclr", "--idx-dir", str(idx), "--out", str(out), "--work-dir", str(tmp_path)]
    args.append("--precise-bn")
    assert quality.main(args) == 0
    results = json.loads(out.read_text())
    rows = {(r["method"], r["side"]): r for r in results["rows"]}
    assert set(rows) == {
        ("raw pixels", "raw pixels"),
        ("simclr", "random init"),
        ("simclr", "ours"),
        ("simclr", "lightly"),
    }
    for row in rows.values():
        for key in ("knn20", "knn200", "linear"):
            assert 0.0 <= row[key] <= 1.0
    # Bars at ten positions: raw pixels separate the classes.
    assert rows[("raw pixels", "raw pixels")]["knn20"] > 0.9
    for side in ("ours", "lightly"):
        row = rows[("simclr", side)]
        assert row["steps"] == 2 and row["images_per_s"] > 0 and row["curve"], row
        assert row["config"]["method"]["name"] == "simclr" and row["commit"] and row["command"].startswith("python")
    # Ours carries the collapse monitor's last reading (lightly's side has no such monitor).
    ours = rows[("simclr", "ours")]
    assert 0.0 < ours["embedding_std"] <= 1.0 and 1.0 <= ours["effective_rank"] <= 128.0, ours
    assert "embedding_std" not in rows[("simclr", "lightly")]
    # With --precise-bn every trunk is also read with batch-norm statistics re-estimated on the
    # training images (the random-init one always): all 160 of the generated training images.
    for side in ("ours", "lightly", "random init"):
        row = rows[("simclr", side)]
        assert row["precise_bn"]["images"] == 160, row
        assert 0.0 <= row["precise_bn"]["knn20"] <= 1.0 and 0.0 <= row["precise_bn"]["linear"] <= 1.0
    assert "precise_bn" not in rows[("raw pixels", "raw pixels")]
    recipes = [
        {k: v for k, v in rows[("simclr", side)]["config"].items() if k != "run"} for side in ("ours", "lightly")
    ]
    assert recipes[0] == recipes[1], "both sides read one recipe"
    assert results["machine"]["cpu_count"] >= 1
    assert "| simclr | lightly |" in out.with_suffix(".md").read_text()
    assert out.with_name("quality_knn.png").stat().st_size > 0
    # A second invocation finds every row and runs nothing.
    caplog.set_level("INFO", logger="quality")
    before = out.read_text()
    assert quality.main(args) == 0
    assert "in the results already" in caplog.text
    assert json.loads(out.read_text())["rows"] == json.loads(before)["rows"]
    # The curves start from the monitor's reading of the untrained trunk; a random-init row from
    # before that reading (or the precise-BN one) existed gets it on the next invocation, in place,
    # and nothing else moves.
    start = rows[("simclr", "random init")]["monitor_knn"]
    assert 0.0 <= start <= 1.0
    for missing in (["monitor_knn"], ["precise_bn"], ["monitor_knn", "precise_bn"]):
        older = json.loads(before)
        for row in older["rows"]:
            if row["side"] == "random init":
                for key in missing:
                    del row[key]
        out.write_text(json.dumps(older))
        assert quality.main(args) == 0
        assert json.loads(out.read_text())["rows"] == json.loads(before)["rows"], missing


def test_both_sides_start_from_the_same_trunk() -> None:
    """The lightly side builds its trunk as sslframe's Trainer does: first, from trainer.seed."""
    from sslframe.config import compose_config
    from sslframe.methods import build_method

    cfg = compose_config("train", ["config=fmnist_simclr", "trainer.seed=3"])
    torch.manual_seed(3)
    ours = build_method(cfg).trunk
    theirs = quality.random_init_trunk(cfg)
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "hidden, batch_norm, last_batch_norm, params",
    [
        ([512], False, False, "none"),
        ([], False, False, "none"),
        ([], False, True, "none"),
        ([512], True, False, "none"),
        ([256, 256], True, True, "none"),
        ([512], True, True, "scale"),
        ([512], True, True, "scale_shift"),
    ],
)
def test_lightly_moco_head_has_the_recipes_layers(
    hidden: list[int], batch_norm: bool, last_batch_norm: bool, params: str
) -> None:
    """The MoCo head of lightly's side is built from the recipe's head config: the same layers, in
    the same order, with the same parameter shapes as ours (bias where there is no batch norm) and
    the same parameters learned (the output batch norm's ``head.last_batch_norm_params``)."""
    from omegaconf import OmegaConf

    from bench.quality_lightly import _moco_head
    from sslframe.models.heads import MLPHead, MLPHeadConfig

    fields = {"hidden_dims": hidden, "batch_norm": batch_norm, "last_batch_norm": last_batch_norm}
    head = OmegaConf.structured(MLPHeadConfig(output_dim=128, last_batch_norm_params=params, **fields))
    ours = MLPHead.from_config(64, head)
    theirs = _moco_head(64, head)

    def layers(module: torch.nn.Module) -> list[tuple[str, list[tuple[tuple[int, ...], bool]]]]:
        leaves = [m for m in module.modules() if not list(m.children())]
        return [(type(m).__name__, [(tuple(p.shape), p.requires_grad) for p in m.parameters()]) for m in leaves]

    assert layers(theirs) == layers(ours)


def _lightly_layout(method: str, overrides: Sequence[str] = ()) -> list[tuple[str, list[tuple[int, ...]], str]]:
    """The leaf modules lightly's side of ``method`` builds on the recipe with ``overrides``."""
    from bench.quality_lightly import LIGHTLY
    from sslframe.config import compose_config

    cfg = compose_config("train", [f"config=fmnist_{method}", *overrides])
    model = LIGHTLY[method](quality.random_init_trunk(cfg), cfg).model
    leaves = [m for m in model.modules() if not list(m.children())]
    return [(type(m).__name__, [tuple(p.shape) for p in m.parameters()], repr(m)) for m in leaves]


def _flipped(method: str, key: str) -> str:
    """An override that gives ``key`` another valid value than the recipe's."""
    from sslframe.config import compose_config

    section, name = key.split(".")
    value = compose_config("train", [f"config=fmnist_{method}"])[section][name]
    other = {True: "false", False: "true", "relu": "gelu", "gelu": "relu", "none": "scale_shift"}
    return f"{key}={other.get(value, 'none')}"


def _fixed_head_keys() -> list[tuple[str, str]]:
    from bench.quality_lightly import FIXED_BY_EXAMPLE

    return [(m, k) for m, keys in FIXED_BY_EXAMPLE.items() for k in keys if k.startswith("head.")]


@pytest.mark.parametrize("method, key", _fixed_head_keys())
def test_lightly_side_builds_its_examples_head_whatever_a_fixed_key_says(method: str, key: str) -> None:
    """The keys FIXED_BY_EXAMPLE lists are the ones lightly's side does not read: overriding one
    leaves every module it builds as it was (which is why a variant setting one is refused)."""
    assert _lightly_layout(method, [_flipped(method, key)]) == _lightly_layout(method)


@pytest.mark.parametrize("method, key", [("mocov2", "head.batch_norm"), ("dino", "head.batch_norm")])
def test_lightly_side_follows_the_head_keys_it_reads(method: str, key: str) -> None:
    """The layout comparison above sees a head change where lightly's side does read the key."""
    from bench.quality_lightly import FIXED_BY_EXAMPLE

    assert key not in FIXED_BY_EXAMPLE.get(method, ())
    assert _lightly_layout(method, [_flipped(method, key)]) != _lightly_layout(method)


def test_a_variant_of_a_key_lightly_does_not_read_is_refused_for_its_side(tmp_path: Path, monkeypatch) -> None:
    """bench/quality_variants.py refuses it before any run, naming the key; ours alone may run it."""
    from bench import quality_variants
    from bench.quality_lightly import refuse_fixed_overrides

    def no_runs(*_args, **_kwargs):
        raise AssertionError("a refused variant pretrained a row")

    monkeypatch.setattr(quality, "run_row", no_runs)
    variant = "lightly's batches=method.view_batches=per_view;method.temperature=0.2"
    args = ["--method", "simclr", "--quick", "--work-dir", str(tmp_path), "--variant", variant]
    with pytest.raises(SystemExit, match=r"keeps its example's method\.view_batches whatever"):
        quality_variants.main([*args, "--sides", "ours,lightly"])
    refuse_fixed_overrides("simclr", ["method.temperature=0.2", "trunk.width_multiplier=0.5"])  # read by both
    refuse_fixed_overrides("mocov2", ["head.batch_norm=false", "head.last_batch_norm_params=scale"])
    with pytest.raises(ValueError, match=r"head\.activation, head\.batch_norm"):
        refuse_fixed_overrides("byol", ["head.batch_norm=false", "+head.activation=gelu"])


def test_unknown_method_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown method nope; valid choices: simclr"):
        quality.main(["--methods", "nope"])


def test_lightly_mae_starts_from_the_same_vit_and_maps_back() -> None:
    """lightly's MAE trains a timm ViT: built from our trunk it computes the same features, and
    its weights map back onto our trunk unchanged."""
    from bench.quality_lightly import timm_vit
    from sslframe.config import compose_config
    from sslframe.eval.interchange import import_state

    cfg = compose_config("train", ["config=fmnist_mae", "trunk.depth=2"])
    trunk = quality.random_init_trunk(cfg).eval()
    vit = timm_vit(trunk).eval()
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), trunk(x), rtol=1e-5, atol=1e-5)
    state, report = import_state(trunk, vit.state_dict(), "timm")
    assert not report.missing and not report.unexpected
    for key, value in trunk.state_dict().items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("method", ["ibot", "dinov2"])
def test_lightly_masked_distillation_student_sees_what_ours_sees(method: str) -> None:
    """lightly's iBOT and DINOv2 sides wrap a timm ViT built from our trunk (LayerScale, learned positions
    interpolated per crop size, our mask token): in eval mode its [CLS] token equals our trunk's
    features on the 28 px globals, on the 16 px local crops and on masked globals, and the
    trained weights map back onto our trunk."""
    from bench.quality_lightly import LIGHTLY
    from sslframe.config import compose_config
    from sslframe.losses.ibot import block_mask

    cfg = compose_config("train", [f"config=fmnist_{method}", "trunk.depth=2"])
    trunk = quality.random_init_trunk(cfg)
    with torch.no_grad():  # non-trivial tokens and positions (ours start at zero)
        for p in (trunk.mask_token, trunk.pos_embed, trunk.cls_token):
            p.normal_(std=0.5)
    spec = LIGHTLY[method](trunk, cfg)
    student = spec.model["student"].eval()
    trunk.eval()
    torch.manual_seed(0)
    for size in (28, 16):
        x = torch.randn(4, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(student.encode(x)[:, 0], trunk(x), rtol=1e-4, atol=1e-4)
    x = torch.randn(4, 3, 28, 28)
    grid = torch.stack([block_mask((7, 7), 12, torch.Generator().manual_seed(i)) for i in range(4)])
    mask = torch.cat([torch.zeros(4, 1, dtype=torch.bool), grid.flatten(1)], dim=1)
    with torch.no_grad():
        theirs = student.encode(x, mask=mask)
        ours = trunk.encode(x, mask=grid.flatten(1))
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    assert spec.trunk_after is not None and spec.trunk_after() is trunk
    # iBOT: one head for [CLS] and patches; DINOv2: two.
    assert (spec.model["s_cls"] is spec.model["s_patch"]) == (method == "ibot")


def test_lightly_side_monitor_watches_the_weights_it_trains(tmp_path: Path, monkeypatch) -> None:
    """Where lightly trains a timm copy of the trunk (MAE here; iBOT and DINOv2 alike), the online
    kNN monitor must see the copy's weights as they train, not the trunk it was built from (its
    curve was flat at the random init's accuracy before)."""
    from bench.quality_lightly import train_lightly
    from sslframe.engine import monitors

    idx = fake_fashion_mnist(tmp_path / "idx")
    data_dir = tmp_path / "data"
    quality.fashion_mnist.prepare(data_dir, idx, limit=quality.QUICK_IMAGES)
    split = quality.load_split(idx, "train", quality.QUICK_IMAGES)
    setting = quality.Setting(
        budget=1, quick=True, work_dir=tmp_path, data_dir=data_dir, train=split, test=split, out=tmp_path / "q.json"
    )
    cfg = quality.experiment("mae", 0, setting, tmp_path / "run", ["trunk.depth=2"])
    assert cfg.monitor.knn_every == 1
    seen: list[torch.Tensor] = []

    def snapshot(monitor: monitors.OnlineKNN) -> float:
        seen.append(monitor.trunk.patch_embed.weight.detach().clone())
        return 0.5

    monkeypatch.setattr(monitors.OnlineKNN, "evaluate", snapshot)
    torch.manual_seed(0)
    initial = quality.random_init_trunk(cfg).patch_embed.weight.detach().clone()
    trunk, steps, _ = train_lightly("mae", cfg)
    assert steps == 2 and len(seen) == 2
    assert not torch.equal(seen[0], initial) and not torch.equal(seen[1], seen[0])
    torch.testing.assert_close(seen[1], trunk.patch_embed.weight.detach())


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_curves_start_at_the_untrained_trunk_and_show_one_budget(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.axes

    drawn: list[tuple[list, list, str]] = []
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, xs, ys, *a, **k: drawn.append((xs, ys, k["label"])))

    def row(side: str, budget: int, curve: list, **extra: float) -> dict:
        return {"method": "simclr", "side": side, "seed": 0, "budget": budget, "curve": curve, **extra}

    results = {
        "rows": [
            row("ours", 16, [[1000, 0.9]]),
            row("random init", 4, [], monitor_knn=0.7),
            row("ours", 4, [[1000, 0.6], [2000, 0.8]]),
            row("lightly", 4, [[1000, 0.5]]),
        ]
    }
    quality.plot_curves(results, tmp_path / "knn.png")
    assert sorted(drawn, key=lambda d: d[2]) == [
        ([0.0, 1.0], [0.7, 0.5], "simclr (lightly)"),
        ([0.0, 1.0, 2.0], [0.7, 0.6, 0.8], "simclr (ours)"),
    ]


def test_markdown_never_averages_speeds_of_different_machines() -> None:
    """quality.md: a side whose seeds ran on two machines gets one images/s figure per machine."""
    fast = {"cpu_model": "Fast CPU", "cpu_count": 2, "torch": "2.x"}
    slow = {**fast, "cpu_model": "Slow CPU"}

    def row(seed: int, machine: dict, speed: float) -> dict:
        return {"method": "dino", "side": "ours", "seed": seed, "budget": 4, "knn20": 0.8, "knn200": 0.78,
                "linear": 0.8, "images_per_s": speed, "wall_s": 60.0, "machine": machine}  # fmt: skip

    one = quality.markdown({"machine": fast, "rows": [row(0, fast, 600.0), row(1, fast, 400.0)]})
    assert "| 0.800 ± 0.000 | 0.780 ± 0.000 | 0.800 ± 0.000 | 500 |" in one
    two = quality.markdown({"machine": fast, "rows": [row(0, fast, 600.0), row(1, slow, 300.0), row(2, slow, 340.0)]})
    assert "| 600 on Fast CPU; 320 on Slow CPU |" in two


@pytest.mark.parametrize("epoch", [0, 1])
def test_dino_training_step_matches_lightlys_side(epoch: int) -> None:
    """One whole DINO step of the benchmark's two sides from the same weights and crops: loss,
    gradients (trunk and head, its batch norm included) and the LARS update agree, with the last
    layer frozen (epoch 0) and learning (epoch 1). Ours runs trunk and head one crop at a time
    (method.trunk_batches=crop, method.head_batches=crop), as lightly's example does."""
    import copy

    from bench.quality_lightly import _optimizer, dino
    from sslframe.config import compose_config
    from sslframe.methods import build_method
    from sslframe.methods.base import StepContext
    from sslframe.optim.build import build_optimizer

    overrides = ["method.out_dim=256", "method.trunk_batches=crop", "method.head_batches=crop"]
    cfg = compose_config("train", ["config=fmnist_dino", *overrides])
    assert cfg.head.batch_norm
    torch.manual_seed(0)
    ours = build_method(cfg).train()
    theirs = dino(copy.deepcopy(ours.trunk), cfg)
    student, teacher = theirs.model["student_head"], theirs.model["th"]
    state = {k.replace("mlp.layers", "layers"): v for k, v in ours.head.state_dict().items()}
    state["last_layer.weight_g"] = torch.ones_like(student.last_layer.weight_g)  # ours: the norm fixed at 1
    student.load_state_dict(state)
    teacher.load_state_dict(student.state_dict())
    theirs.model.train()

    g = torch.Generator().manual_seed(1)
    crops = [torch.randn(16, 3, 28, 28, generator=g) for _ in range(2)]
    crops += [torch.randn(16, 3, 16, 16, generator=g) for _ in range(4)]
    step, total = 300, 936
    ctx = StepContext(step=step, epoch=epoch, steps_per_epoch=234, total_steps=total)
    ours_loss = ours.training_step(crops, ctx).loss
    their_loss = theirs.loss(crops, step, epoch, total)
    torch.testing.assert_close(ours_loss, their_loss)
    ours_loss.backward()
    their_loss.backward()
    ours.before_optimizer_step(ctx)
    theirs.before_step(step, epoch)

    their_head = dict(student.named_parameters())
    pairs = list(zip(ours.trunk.parameters(), theirs.model["student_backbone"].parameters(), strict=True))
    pairs += [(p, their_head[name.replace("mlp.layers", "layers")]) for name, p in ours.head.named_parameters()]
    assert (ours.head.last_layer.weight_v.grad is None) == (epoch == 0)
    for a, b in pairs:
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5)
    build_optimizer(ours, cfg.optim, 0.3).step()
    their_opt = _optimizer(theirs.trained, cfg, 0.3)
    their_opt.step()
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _projector_pair(config: str, peer: str, extra: Sequence[str] = ()) -> tuple[Any, Any, Any]:
    """The recipe ``config``, ours built from it, and lightly's side (``bench.quality_lightly.<peer>``)
    from the same weights: the trunk copied, the projection head loaded (lightly's head is the same
    layers in the same order, which the load checks)."""
    import copy

    from bench import quality_lightly
    from sslframe.config import compose_config
    from sslframe.methods import build_method

    cfg = compose_config("train", [f"config={config}", *extra])
    torch.manual_seed(0)
    ours = build_method(cfg).train()
    theirs = getattr(quality_lightly, peer)(copy.deepcopy(ours.trunk), cfg)
    theirs.model["projection_head"].load_state_dict(ours.head.state_dict())
    return cfg, ours, theirs


def _predictor_pair(config: str, peer: str) -> tuple[Any, Any, Any]:
    """``_projector_pair`` with the prediction head loaded as well."""
    cfg, ours, theirs = _projector_pair(config, peer)
    theirs.model["prediction_head"].load_state_dict(ours.predictor.state_dict())
    return cfg, ours, theirs


PREDICTOR_HEADS = (("head", "projection_head"), ("predictor", "prediction_head"))


def _step_agrees(
    cfg: Any,
    ours: Any,
    theirs: Any,
    lr: float,
    loss_offset: float,
    heads: tuple = PREDICTOR_HEADS,
    dtype: torch.dtype = torch.float32,
) -> float:
    """One step of both sides on the same views (in ``dtype``): ours' loss is lightly's plus
    ``loss_offset``; every gradient (trunk and each of ``heads``, pairs of ours' and lightly's
    module names) and the optimizer's update agree. Returns ours' loss."""
    from bench.quality_lightly import _optimizer
    from sslframe.methods.base import StepContext
    from sslframe.optim.build import build_optimizer

    theirs.model.train()
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(32, 3, 28, 28, generator=g).to(dtype) for _ in range(2)]
    ctx = StepContext(step=10, epoch=0, steps_per_epoch=234, total_steps=936)
    ours_loss = ours.training_step(views, ctx).loss
    their_loss = theirs.loss(views, 10, 0, 936)
    torch.testing.assert_close(ours_loss, their_loss + loss_offset)
    ours_loss.backward()
    their_loss.backward()

    pairs = list(zip(ours.trunk.parameters(), theirs.model["backbone"].parameters(), strict=True))
    for mine, lightlys in heads:
        pairs += list(zip(getattr(ours, mine).parameters(), theirs.model[lightlys].parameters(), strict=True))
    assert all(a.grad is not None and float(a.grad.abs().sum()) > 0 for a, _ in pairs)
    for a, b in pairs:
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-6)
    before = [a.detach().clone() for a, _ in pairs]
    build_optimizer(ours, cfg.optim, lr).step()
    _optimizer([theirs.model], cfg, lr).step()
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(a, old) for (a, _), old in zip(pairs, before, strict=True))
    return float(ours_loss.detach())


def test_simsiam_training_step_matches_lightlys_side() -> None:
    """One SimSiam step of the benchmark's two sides from the same weights and views: the loss,
    every gradient (trunk, projector, predictor) and the SGD update agree. The sides' networks,
    loss and optimizer are the same computation, so what is left between their results is the
    views (ours whole-batch, ``transform.backend=batch``; lightly's per image with PIL) and the
    random streams."""
    cfg, ours, theirs = _predictor_pair("fmnist_simsiam", "simsiam")
    loss = _step_agrees(cfg, ours, theirs, lr=0.06, loss_offset=0.0)
    assert -1.0 < loss < 1.0  # a negative cosine, averaged over the two pairs


def test_byol_training_step_matches_lightlys_side() -> None:
    """One BYOL step of the benchmark's two sides from the same weights and views. The recipe's
    ``method.loss_weight`` (0.25) puts ours at the scale of lightly's example, half the mean
    negative cosine of the two view pairs: the losses differ by the constant 1 (ours is 0.25 times
    the paper's 2 - 2 cos summed over the pairs), every gradient and the LARS update agree."""
    cfg, ours, theirs = _predictor_pair("fmnist_byol", "byol")
    assert cfg.method.loss_weight == 0.25
    theirs.model["bm"].load_state_dict(ours.target_trunk.state_dict())
    theirs.model["pm"].load_state_dict(ours.target_head.state_dict())
    _step_agrees(cfg, ours, theirs, lr=1.0, loss_offset=1.0)


def test_simclr_training_step_matches_lightlys_side() -> None:
    """One SimCLR step of the benchmark's two sides from the same weights and views, with ours set
    to lightly's two departures from the recipe: each view through trunk and head on its own
    (``method.view_batches=per_view``; the recipe batches them together, as the authors'
    tf2/model.py does) and an output batch norm with a learned scale and shift
    (``head.last_batch_norm_params=scale_shift``, lightly's ``SimCLRProjectionHead``; the recipe
    learns neither). Then ours (NT-Xent over the 2N embeddings, Chen et al. 2020 eq. 1) and
    lightly's ``NTXentLoss`` give the same loss, every gradient and the same LARS update: what is
    left between the sides' rows is those two settings, the views and the random streams."""
    extra = ["method.view_batches=per_view", "head.last_batch_norm_params=scale_shift"]
    cfg, ours, theirs = _projector_pair("fmnist_simclr", "simclr", extra)
    heads = (("head", "projection_head"),)
    loss = _step_agrees(cfg, ours, theirs, lr=cfg.optim.lr, loss_offset=0.0, heads=heads)
    assert loss > 0.0


@pytest.mark.parametrize("method", ["barlowtwins", "vicreg"])
def test_redundancy_reduction_step_matches_lightlys_side(method: str) -> None:
    """One Barlow Twins or VICReg step of the benchmark's two sides from the same weights and
    views: ours (each view through trunk and projector on its own, so batch-norm statistics are
    per view as in the authors' code; Barlow Twins' cross-correlation of batch-standardised
    embeddings, eq. 1-2; VICReg's variance hinges averaged over the two views, as in the authors'
    main_vicreg.py) and lightly's ``BarlowTwinsLoss`` / ``VICRegLoss`` give the same loss, every
    gradient and the same LARS update (biases and norms left out of weight decay and scaling on
    both sides). In float64: these losses are large at initialisation (about 1e3 for Barlow Twins,
    1024 dimensions far from the identity correlation), and in float32 the two sides' orders of
    summation leave trunk gradients apart by up to 4e-6 of a tensor's largest entry (measured),
    beyond a fixed tolerance; in float64, 7e-15."""
    cfg, ours, theirs = _projector_pair(f"fmnist_{method}", method)
    ours.double()
    theirs.model.double()
    heads = (("head", "projection_head"),)
    _step_agrees(cfg, ours, theirs, lr=cfg.optim.lr, loss_offset=0.0, heads=heads, dtype=torch.float64)


def test_mae_training_step_matches_lightlys_side(monkeypatch) -> None:
    """One MAE step of the benchmark's two sides from the same encoder, decoder and mask: the loss
    and every gradient (encoder and decoder) agree. Ours' decoder starts from the MAE authors'
    initialisation, Xavier-uniform linear layers, as lightly's MAEDecoderTIMM does."""
    import copy

    from lightly.models import utils

    from bench.quality_lightly import mae
    from sslframe.config import compose_config
    from sslframe.eval.interchange import export_trunk
    from sslframe.methods import build_method
    from sslframe.methods import mae as ours_mae
    from sslframe.methods.base import StepContext

    cfg = compose_config("train", ["config=fmnist_mae", "trunk.depth=2"])
    torch.manual_seed(0)
    ours = build_method(cfg).train()
    # Xavier-uniform weights have std sqrt(2 / (fan_in + fan_out)) (Glorot and Bengio 2010, eq. 16).
    for name, layer in ours.head.named_modules():
        if isinstance(layer, torch.nn.Linear):
            expected = (2 / sum(layer.weight.shape)) ** 0.5
            assert abs(float(layer.weight.detach().std()) / expected - 1) < 0.1, name
    theirs = mae(copy.deepcopy(ours.trunk), cfg)
    decoder = theirs.model["decoder"]
    renamed = {"embed": "decoder_embed", "blocks": "decoder_blocks", "norm": "decoder_norm", "pred": "decoder_pred"}

    def their_name(key: str) -> str:
        first, _, rest = key.partition(".")
        return f"{renamed[first]}.{rest}" if first in renamed else key

    state = {their_name(k): v for k, v in ours.head.state_dict().items()}
    # Both decoders add fixed sine-cosine positions; lightly's (the MAE authors' layout) puts the
    # column code in the first half of the channels, ours the row code: a fixed permutation of
    # channels that iid-initialised layers cannot tell apart. Ours go in, a zero for the class token.
    ours_positions = ours.head.positions((7, 7), torch.zeros(1))
    assert torch.allclose(ours_positions.sort(dim=1).values, decoder.decoder_pos_embed[0, 1:].sort(dim=1).values)
    state["decoder_pos_embed"] = torch.cat([torch.zeros(1, 1, 128), ours_positions[None]], dim=1)
    decoder.load_state_dict(state)
    theirs.model.train()

    images = torch.randn(8, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    keep, mask = ours_mae.random_masking(8, 49, 0.75, images.device, generator=torch.Generator().manual_seed(2))
    hidden = mask.nonzero()[:, 1].view(8, -1)
    monkeypatch.setattr(ours_mae, "random_masking", lambda *args, **kwargs: (keep, mask))
    # lightly's token indices count its class token first: patch i is token i + 1.
    lightly_keep = torch.cat([torch.zeros(8, 1, dtype=torch.long), keep + 1], dim=1)
    monkeypatch.setattr(utils, "random_token_mask", lambda *args, **kwargs: (lightly_keep, hidden + 1))

    ctx = StepContext(step=10, epoch=0, steps_per_epoch=234, total_steps=936)
    ours_loss = ours.training_step([images], ctx).loss
    their_loss = theirs.loss([images], 10, 0, 936)
    torch.testing.assert_close(ours_loss, their_loss)
    ours_loss.backward()
    their_loss.backward()

    checked = 0
    for key, param in ours.head.named_parameters():
        torch.testing.assert_close(param.grad, decoder.get_parameter(their_name(key)).grad, rtol=1e-4, atol=1e-7)
        checked += 1
    # The encoder's gradients, carried to timm's names by the same export that maps its weights.
    as_grads = copy.deepcopy(ours.trunk)
    with torch.no_grad():
        for (_, p), (_, src) in zip(as_grads.named_parameters(), ours.trunk.named_parameters(), strict=True):
            p.copy_(src.grad if src.grad is not None else torch.zeros_like(p))
    ours_grads = export_trunk(as_grads, "timm")
    for key, param in theirs.model["backbone"].vit.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and float(param.grad.abs().sum()) > 0, key
            torch.testing.assert_close(ours_grads[key], param.grad, rtol=1e-4, atol=1e-7, msg=key)
            checked += 1
    assert checked > 30


def _objects(n: int, seed: int) -> np.ndarray:
    """``n`` grey 28 px images in Fashion-MNIST's manner: a textured ellipse of random size, place
    and brightness on a black background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    cy, cx = rng.uniform(9, 19, (2, n, 1, 1))
    ry, rx = rng.uniform(4, 13, (2, n, 1, 1))
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    level = rng.uniform(60, 230, (n, 1, 1))
    texture = rng.normal(0, 25, (n, 28, 28))
    return np.where(inside, np.clip(level + texture, 0, 255), 0).astype(np.uint8)


def _ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = a.double().sort().values, b.double().sort().values
    both = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, both, right=True) / len(a)
    cdf_b = torch.searchsorted(b, both, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def _view_statistics(views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per image: each view's mean and spread, and how alike the first two views are (cosine of
    their pixels): what the crops, flips and jitter change."""
    flat = [v[:, 0].flatten(1) for v in views]
    stats = {}
    for i, x in enumerate(flat):
        stats[f"view {i} mean"], stats[f"view {i} std"] = x.mean(dim=1), x.std(dim=1)
    if len(flat) > 1:
        stats["cosine of views 0 and 1"] = F.cosine_similarity(flat[0], flat[1], dim=1)
    return stats


# With 3000 images, the KS distance between two samples of one distribution stays under 0.05 with
# probability above 0.99 (the Kolmogorov distribution: 1.63 * sqrt(2 / 3000) = 0.042 at p = 0.01).
_VIEW_IMAGES = 3000
_KS_BOUND = 0.05


# One method for each lightly transform the benchmark builds (Barlow Twins shares BYOL's).
@pytest.mark.parametrize("method", ["simclr", "mocov2", "simsiam", "byol", "vicreg", "swav", "dino", "mae"])
def test_ours_and_lightlys_views_have_one_distribution(method: str) -> None:
    """The views of the two sides are made by different code (ours in whole batches,
    ``transform.backend=batch``; lightly's per image with torchvision and PIL) from different random
    streams; from one recipe they must still be draws of one distribution. Each view's per-image
    mean and spread, and the likeness of the two global views, agree within the KS bound above, for
    each of lightly's transforms the benchmark uses (SimCLR's, MoCo v2's, SimSiam's, BYOL's,
    VICReg's, SwAV's and DINO's multi-crop, MAE's single view). The bound has teeth: with ours at
    crop scale 0.5-1 instead of 0.3-1, colour jitter at half strength or half probability, or
    without flips, some distance exceeds it; and it caught lightly's DINOTransform jittering its
    second global view at another strength than the recipe's (``bench.quality_lightly._dino_views``
    now passes the amounts so that it does not)."""
    from PIL import Image

    from bench.quality_lightly import LIGHTLY
    from sslframe.config import compose_config
    from sslframe.data.batch_transforms import BatchMultiCrop

    cfg = compose_config("train", [f"config=fmnist_{method}"])
    images = torch.from_numpy(_objects(_VIEW_IMAGES, seed=0))
    n = len(images)
    batch = images[:, None].expand(n, 3, 28, 28).contiguous()
    ours = BatchMultiCrop(cfg.transform)(batch, torch.tensor([[28, 28]] * n), torch.Generator().manual_seed(0))
    transform = LIGHTLY[method](quality.random_init_trunk(cfg), cfg).transform
    torch.manual_seed(0)
    per_image = [transform(Image.fromarray(image.numpy()).convert("RGB")) for image in images]
    theirs = [torch.stack(views) for views in zip(*per_image, strict=True)]
    assert [v.shape for v in ours] == [v.shape for v in theirs]
    ours_stats, their_stats = _view_statistics(ours), _view_statistics(theirs)
    distances = {name: _ks_distance(ours_stats[name], their_stats[name]) for name in ours_stats}
    assert max(distances.values()) < _KS_BOUND, distances
