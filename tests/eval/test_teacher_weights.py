"""Evaluating and exporting a method's teacher (``eval.encoder=teacher``): the momentum copy of
the trunk that DINO's, iBOT's, DINOv2's and I-JEPA's authors evaluate, found in the checkpoint of
every method that keeps one and refused, with the reason, for the others."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

from sslframe.config import compose_config
from sslframe.distributed.export import trunk_weights
from sslframe.errors import UserError
from sslframe.eval.features import load_trunk
from sslframe.methods import METHODS, build_method
from tests.helpers import ROOT, make_image_folder, tiny_config
from tests.methods.generated_views import one_thread

# The methods whose class keeps a momentum (EMA) copy of the trunk, read off their code:
# byol.py target_trunk, mocov2.py key_trunk, mocov3.py momentum_trunk, dino.py and ibot.py
# (iBOT and DINOv2) teacher_trunk, ijepa.py target_encoder.
WITH_TEACHER = {"byol": "target_trunk", "mocov2": "key_trunk", "mocov3": "momentum_trunk", "dino": "teacher_trunk"}
WITH_TEACHER |= {"ibot": "teacher_trunk", "dinov2": "teacher_trunk", "ijepa": "target_encoder"}


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_the_teacher_is_found_in_every_method_that_keeps_one(name: str, tmp_path: Path) -> None:
    """Each method built from its Fashion-MNIST recipe: the teacher weights are exactly its
    momentum copy's, and a method without one is refused naming the methods that have one."""
    with one_thread():
        method = build_method(compose_config("train", [f"config=fmnist_{name}", f"run.dir={tmp_path}"]))
    state = method.state_dict()
    student = trunk_weights(state, "student", tmp_path)
    assert student.keys() == method.trunk.state_dict().keys()
    if name in WITH_TEACHER:
        teacher = trunk_weights(state, "teacher", tmp_path)
        copy = getattr(method, WITH_TEACHER[name]).state_dict()
        assert teacher.keys() == copy.keys() and all(teacher[k] is state[f"{WITH_TEACHER[name]}.{k}"] for k in copy)
    else:
        with pytest.raises(UserError, match=r"keeps no teacher copy of its trunk: eval\.encoder=teacher applies"):
            trunk_weights(state, "teacher", tmp_path)


def test_an_unknown_encoder_and_a_checkpoint_without_trunk_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown eval\.encoder 'ema'; valid choices: student, teacher"):
        trunk_weights({"trunk.w": torch.zeros(1)}, "ema", tmp_path)
    with pytest.raises(UserError, match="holds no trunk weights"):
        trunk_weights({"head.w": torch.zeros(1)}, "student", tmp_path)
    # Two modules shaped like the trunk: which one is the teacher is not guessed.
    two = {"trunk.w": torch.zeros(1), "a.w": torch.ones(1), "b.w": torch.ones(1)}
    with pytest.raises(UserError, match=r"several copies of its trunk \(a, b\)"):
        trunk_weights(two, "teacher", tmp_path)
    with pytest.raises(Exception, match="encoder"):
        compose_config("eval", ["eval=knn", f"checkpoint={tmp_path}", "eval.encoder=ema"])


@pytest.fixture(scope="module")
def byol_run(tmp_path_factory) -> Path:
    """Two BYOL steps at TINY sizes (its target moves by an EMA step, so it differs from the
    online trunk), train and val folders of three classes."""
    from sslframe.engine.trainer import Trainer

    root = tmp_path_factory.mktemp("teacher")
    make_image_folder(root / "train", classes=3, per_class=12, seed=0)
    make_image_folder(root / "val", classes=3, per_class=6, seed=1)
    extra = ["method.predictor_hidden_dims=[32]", "transform.local_crops=0", "trainer.max_steps=2"]
    extra += ["method.base_momentum=0.5"]  # a large EMA step: the two trunks clearly differ
    with one_thread():
        Trainer(tiny_config(root / "train", root / "run", *extra, config="byol_resnet50")).fit()
    return root


def test_teacher_weights_load_evaluate_and_export(byol_run: Path, monkeypatch) -> None:
    from sslframe.distributed import checkpoint as ckpt
    from sslframe.eval.run import run_eval

    state, _ = ckpt.load_checkpoint(ckpt.resolve_checkpoint(byol_run / "run"))
    student, _, _ = load_trunk(byol_run / "run")
    teacher, _, _ = load_trunk(byol_run / "run", encoder="teacher")
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, state["model"][f"target_trunk.{key}"]), key
    assert any(not torch.equal(v, teacher.state_dict()[k]) for k, v in student.state_dict().items())
    # The random-init baseline is the same network either way: the target starts as a copy.
    fresh = load_trunk(byol_run / "run", random_init=True)[0].state_dict()
    fresh_teacher = load_trunk(byol_run / "run", random_init=True, encoder="teacher")[0].state_dict()
    assert all(torch.equal(v, fresh_teacher[k]) for k, v in fresh.items())

    def knn(*overrides: str) -> dict:
        cfg = compose_config(
            "eval",
            [
                "eval=knn",
                f"checkpoint={byol_run / 'run'}",
                "data=folder",
                f"data.path={byol_run / 'train'}",
                f"data.val_path={byol_run / 'val'}",
                "eval.num_workers=0",
                "eval.ks=[1]",
                *overrides,
            ],
        )
        return run_eval(cfg)

    with one_thread():
        own, theirs = knn(), knn("eval.encoder=teacher")
    assert Path(own["path"]).name == "knn.json" and Path(theirs["path"]).name == "knn_teacher.json"
    assert json.loads(Path(theirs["path"]).read_text())["encoder"] == "teacher"
    assert own["result"]["encoder"] == "student"
    with pytest.raises(UserError, match=r"eval\.encoder=teacher picks the weights of an sslframe run"):
        knn("eval.encoder=teacher", "eval.layout=timm", "eval.arch=resnet18")

    # tools/export.py --encoder teacher writes the target's weights.
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    main = runpy.run_path(str(ROOT / "tools" / "export.py"), run_name="tool_under_test")["main"]
    out = byol_run / "teacher.pt"
    assert (
        main(["export", str(byol_run / "run"), "--naming", "torchvision", "--encoder", "teacher", "--out", str(out)])
        == 0
    )
    written = torch.load(out, weights_only=True)
    assert all(torch.equal(written[k], v) for k, v in teacher.state_dict().items() if k in written)
    assert not all(torch.equal(written[k], v) for k, v in student.state_dict().items() if k in written)


def test_a_method_without_teacher_is_refused_by_the_eval_tool(tmp_path: Path) -> None:
    from sslframe.engine.trainer import Trainer
    from sslframe.eval.run import run_eval

    data = make_image_folder(tmp_path / "images", classes=2, per_class=8)
    with one_thread():
        Trainer(tiny_config(data, tmp_path / "run", "trainer.max_steps=1")).fit()
    cfg = compose_config(
        "eval",
        ["eval=knn", f"checkpoint={tmp_path / 'run'}", "data=folder", f"data.path={data}", "eval.encoder=teacher"],
    )
    with pytest.raises(UserError, match="keeps no teacher copy of its trunk"):
        run_eval(cfg)
    assert not (tmp_path / "run" / "eval").exists()  # nothing half-written


def test_extracted_features_keep_their_source(byol_run: Path, monkeypatch) -> None:
    """Extractions of the student, the teacher and the random init land in folders of their own and
    record their source; an evaluation of cached features is labelled by that record (not by the
    eval config's defaults), and one that asks for other features than the cached ones is refused."""
    from sslframe.eval.run import run_eval
    from sslframe.eval.store import read_features

    def run(task: str, *overrides: str) -> dict:
        data = ["data=folder", f"data.path={byol_run / 'train'}", f"data.val_path={byol_run / 'val'}"]
        args = [f"eval={task}", f"checkpoint={byol_run / 'run'}", *data, "eval.num_workers=0", *overrides]
        cfg = compose_config("eval", args)
        with one_thread():
            return run_eval(cfg)

    student = Path(run("extract")["result"]["features"])
    before = read_features(student / "val")
    teacher = Path(run("extract", "eval.encoder=teacher")["result"]["features"])
    fresh = Path(run("extract", "eval.random_init=true")["result"]["features"])
    pixels = Path(run("extract", "eval.raw_pixels=true")["result"]["features"])
    assert (student.name, teacher.name, fresh.name) == ("features", "features_teacher", "features_random_init")
    assert pixels.name == "features_raw_pixels" and read_features(pixels / "val").meta["raw_pixels"] is True
    assert student.parent == teacher.parent == fresh.parent == pixels.parent == byol_run / "run" / "eval"
    after = read_features(student / "val")
    assert torch.equal(after.features, before.features)  # the later extractions left it alone
    theirs, untrained = read_features(teacher / "val"), read_features(fresh / "val")
    assert not torch.equal(theirs.features, after.features) and not torch.equal(untrained.features, after.features)
    assert (after.meta["encoder"], theirs.meta["encoder"]) == ("student", "teacher")
    assert (after.meta["random_init"], untrained.meta["random_init"]) == (False, True)

    cached = run("knn", f"eval.features={teacher}", "eval.ks=[1]")
    assert cached["result"]["encoder"] == "teacher" and Path(cached["path"]) == teacher / "knn.json"
    assert cached["result"]["top1"] == run("knn", "eval.encoder=teacher", "eval.ks=[1]")["result"]["top1"]
    assert run("knn", f"eval.features={fresh}", "eval.ks=[1]")["result"]["random_init"] is True
    with pytest.raises(UserError, match=r"eval\.encoder=teacher asks for other features than those in .*student"):
        run("knn", f"eval.features={student}", "eval.encoder=teacher", "eval.ks=[1]")
    with pytest.raises(UserError, match=r"eval\.random_init=true asks for other features"):
        run("linear", f"eval.features={teacher}", "eval.random_init=true")

    # tools/convert.py consolidate --encoder teacher writes the momentum copy's weights.
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    main = runpy.run_path(str(ROOT / "tools" / "convert.py"), run_name="tool_under_test")["main"]
    out = byol_run / "consolidated_teacher.pt"
    assert main(["consolidate", str(byol_run / "run"), "--out", str(out), "--encoder", "teacher"]) == 0
    written = torch.load(out, weights_only=True)
    expected = load_trunk(byol_run / "run", encoder="teacher")[0].state_dict()
    assert written.keys() == expected.keys() and all(torch.equal(written[k], v) for k, v in expected.items())
    with pytest.raises(UserError, match="--with-heads writes every module"):
        main(["consolidate", str(byol_run / "run"), "--out", str(out), "--with-heads", "--encoder", "teacher"])

    # tools/plot.py --encoder teacher: the map of the teacher's features, beside the student's.
    from sslframe.eval.plots import plot_embeddings

    with one_thread():
        path = plot_embeddings(byol_run / "run", byol_run / "plots", max_points=12, encoder="teacher")
    assert path == byol_run / "plots" / "embeddings_teacher.png" and path.stat().st_size > 0
