"""Barlow Twins, VICReg and DeepCluster-v2: short runs on generated images (the loss falls, the
embeddings do not collapse), per-view batch norm, and DeepCluster-v2's memory bank (filled before
training) and per-epoch clustering state."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from sslframe.config import compose_config
from sslframe.engine.trainer import train
from sslframe.methods import Method, StepContext, build_method
from sslframe.methods.deepclusterv2 import UNASSIGNED, DeepClusterV2
from sslframe.optim.build import parameter_groups
from tests.helpers import TINY, make_image_folder
from tests.methods.vit_runs import augment, generated_images

SIZE, IMAGES, BATCH = 16, 32, 8
# Epochs of the DeepCluster-v2 run: the first fills the bank, each later one starts by clustering.
EPOCHS = 4
STEPS_PER_EPOCH = IMAGES // BATCH


def tiny(config: str, *extra: str) -> Method:
    cfg = compose_config("train", [f"config={config}", *TINY, "data=folder", "data.path=unused", *extra])
    torch.manual_seed(0)
    return build_method(cfg)


def tiny_deepcluster() -> DeepClusterV2:
    method = tiny("deepclusterv2_resnet50", "method.num_prototypes=[6,4]", "method.kmeans_iterations=5")
    assert isinstance(method, DeepClusterV2)
    method.bind_dataset(IMAGES, 0, 1)
    return method


def run_epochs(method: Method, epochs: int, lr: float, views: int = 2, seed: int = 0) -> dict[str, list]:
    """Train as the Trainer does (forward, backward, hooks, step, hooks), one shuffled pass over
    the generated images per epoch; per step: epoch, loss, mean per-dimension embedding std."""
    data = generated_images(IMAGES, size=SIZE, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(parameter_groups(method, 1e-4, True), lr=lr)
    total = epochs * STEPS_PER_EPOCH
    record: dict[str, list] = {"epoch": [], "loss": [], "std": []}
    method.train()
    if method.needs_data_pass():
        # As the Trainer does before training: one pass over the data without gradients.
        with torch.no_grad():
            for i in range(STEPS_PER_EPOCH):
                indices = torch.arange(i * BATCH, (i + 1) * BATCH)
                ctx = StepContext(i, 0, STEPS_PER_EPOCH, total, indices, data_pass=True)
                method.training_step([augment(data[indices], g) for _ in range(views)], ctx)
    for epoch in range(epochs):
        order = torch.randperm(IMAGES, generator=g)
        for i in range(STEPS_PER_EPOCH):
            indices = order[i * BATCH : (i + 1) * BATCH]
            images = data[indices]
            ctx = StepContext(epoch * STEPS_PER_EPOCH + i, epoch, STEPS_PER_EPOCH, total, indices)
            out = method.training_step([augment(images, g) for _ in range(views)], ctx)
            out.loss.backward()
            method.before_optimizer_step(ctx)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            method.after_optimizer_step(ctx)
            record["epoch"].append(epoch)
            record["loss"].append(float(out.loss.detach()))
            record["std"].append(float(out.embeddings.std(dim=0).mean()))
    return record


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def assert_not_collapsed(stds: list[float], dim: int) -> None:
    # Unit vectors spread evenly over ``dim`` dimensions have a per-dimension std of about
    # 1/sqrt(dim); a collapsed embedding has 0. Require a quarter of the even spread.
    assert min(stds[-3:]) > 0.25 / math.sqrt(dim), stds


@pytest.mark.parametrize("config", ["barlowtwins_resnet50", "vicreg_resnet50"])
def test_each_view_passes_trunk_and_projector_on_its_own(config: str) -> None:
    """The authors' code runs ``projector(backbone(y))`` once per view (Barlow Twins: main.py,
    ``BarlowTwins.forward``; VICReg: main_vicreg.py, ``VICReg.forward``), so batch-norm statistics
    are per view: the first view's embedding is that of the view alone, whatever the second is."""
    method = tiny(config)
    method.train()
    g = torch.Generator().manual_seed(0)
    first, second, other = (torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(3))
    ctx = StepContext(0, 0, 1, 1)
    with torch.no_grad():
        a = method.training_step([first, second], ctx).embeddings
        b = method.training_step([first, other], ctx).embeddings
        alone = torch.nn.functional.normalize(method.head(method.trunk(first)), dim=1)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, alone)


@pytest.mark.parametrize("config", ["barlowtwins_resnet50", "vicreg_resnet50"])
def test_short_run_loss_falls_without_collapse(config: str) -> None:
    method = tiny(config)
    record = run_epochs(method, epochs=4, lr=3e-3)
    losses = record["loss"]
    assert all(math.isfinite(v) for v in losses)
    assert mean(losses[-3:]) < 0.8 * mean(losses[:3]), losses
    assert_not_collapsed(record["std"], method.head.output_dim)


@pytest.fixture(scope="module")
def deepcluster_run() -> tuple[DeepClusterV2, dict[str, list], list[torch.Tensor]]:
    """Four epochs of DeepCluster-v2, keeping the assignment table after each epoch's clustering."""
    method = tiny_deepcluster()
    tables = []
    original_cluster = method.cluster

    def cluster_and_keep(epoch: int) -> None:
        original_cluster(epoch)
        tables.append(method.assignments.clone())

    method.cluster = cluster_and_keep  # type: ignore[method-assign]
    record = run_epochs(method, epochs=EPOCHS, lr=3e-3, views=3)
    del method.cluster  # back to the class's method
    return method, record, tables


def test_deepcluster_fills_the_bank_before_training(deepcluster_run: tuple) -> None:
    """The authors' main_deepclusterv2.py fills the memory bank with one pass over the data
    (``init_memory``) before the first epoch, so epoch 0 already trains on clusters."""
    _, record, tables = deepcluster_run
    first = [loss for loss, epoch in zip(record["loss"], record["epoch"], strict=True) if epoch == 0]
    assert all(loss > 0 for loss in first), first
    assert all(bool((t != UNASSIGNED).all()) for t in tables), "every sample is assigned from epoch 0 on"
    fresh = tiny_deepcluster()
    assert fresh.needs_data_pass()
    crops = [torch.randn(BATCH, 3, SIZE, SIZE) for _ in range(3)]
    for i in range(STEPS_PER_EPOCH):
        ctx = StepContext(
            i, 0, STEPS_PER_EPOCH, STEPS_PER_EPOCH, torch.arange(i * BATCH, (i + 1) * BATCH), data_pass=True
        )
        out = fresh.training_step(crops, ctx)
        assert float(out.loss) == 0.0
    assert not fresh.needs_data_pass()
    assert sorted(fresh.bank_index.tolist()) == list(range(IMAGES))
    assert int(fresh.clustered_epoch) == -1, "the data pass only fills the bank; clustering starts with step 0"


def test_deepcluster_assignments_are_refreshed_each_epoch(deepcluster_run: tuple) -> None:
    method, _, tables = deepcluster_run
    assert len(tables) == EPOCHS and int(method.clustered_epoch) == EPOCHS - 1
    assert any(not torch.equal(a, b) for a, b in itertools.pairwise(tables[1:]))
    # A clustering leaves each sample of the bank assigned to its nearest prototype (the final
    # centroids), prototype set j reading crop j % 2. The bank has been overwritten since the
    # last clustering, so cluster a copy of the method once more.
    method = copy.deepcopy(method)
    method.cluster(EPOCHS)
    for j in range(len(method.num_prototypes)):
        prototypes = method.prototypes(j)
        torch.testing.assert_close(prototypes.norm(dim=1), torch.ones(prototypes.shape[0]))
        nearest = (method.bank[j % 2] @ prototypes.t()).argmax(dim=1)
        assert torch.equal(method.assignments[j, method.bank_index], nearest)
    assert sorted(method.bank_index.tolist()) == list(range(IMAGES))


def test_deepcluster_state_dict_holds_shared_state_and_rank_state_the_bank(deepcluster_run: tuple) -> None:
    method, _, _ = deepcluster_run
    state = method.state_dict()
    assert {"assignments", "clustered_epoch", "prototypes_0", "prototypes_1"} <= set(state)
    assert "bank" not in state and "bank_index" not in state
    assert set(method.rank_state_dict()) == {"bank", "bank_index"}
    fresh = tiny_deepcluster()
    fresh.load_state_dict(state)
    fresh.load_rank_state_dict({k: v.clone() for k, v in method.rank_state_dict().items()})
    assert torch.equal(fresh.assignments, method.assignments) and int(fresh.clustered_epoch) == EPOCHS - 1
    assert torch.equal(fresh.bank, method.bank)
    fresh.load_rank_state_dict(None)  # a rank without saved state starts with an empty bank
    assert bool((fresh.bank_index == UNASSIGNED).all())


def test_deepcluster_loss_falls_over_epochs(deepcluster_run: tuple) -> None:
    _, record, _ = deepcluster_run
    by_epoch = [
        mean([v for v, e in zip(record["loss"], record["epoch"], strict=True) if e == k]) for k in range(EPOCHS)
    ]
    assert by_epoch[-1] < 0.8 * by_epoch[0], by_epoch
    assert_not_collapsed(record["std"], 16)


def test_deepcluster_needs_sample_indices_and_enough_samples() -> None:
    method = tiny_deepcluster()
    crops = [torch.randn(BATCH, 3, SIZE, SIZE) for _ in range(2)]
    with pytest.raises(ValueError, match="dataset index"):
        method.training_step(crops, StepContext(0, 0, STEPS_PER_EPOCH, STEPS_PER_EPOCH))
    from sslframe.errors import UserError

    with pytest.raises(UserError, match="num_prototypes"):
        method.bind_dataset(8, 0, 2)


def test_deepcluster_run_through_the_trainer_resumes_exactly(tmp_path: Path) -> None:
    """Stopped mid-epoch after a clustering and resumed, a run repeats the uninterrupted losses:
    the checkpoint holds the assignment table and the prototypes, and each rank's memory bank,
    half of which the next epoch's clustering reads from before the interruption (the resumed
    run makes no second data pass: its bank comes from the checkpoint)."""
    data = make_image_folder(tmp_path / "images", per_class=8)  # 16 images: 2 steps of 8 per epoch

    def run(name: str, *extra: str) -> list[float]:
        args = [
            "config=deepclusterv2_resnet50",
            *TINY,
            "data=folder",
            f"data.path={data}",
            f"run.dir={tmp_path / name}",
        ]
        args += ["method.num_prototypes=[4,3]", "trainer.max_epochs=3", "optim.lr=0.5", "schedule.warmup_epochs=0"]
        train(compose_config("train", [*args, *extra]))
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines]

    full = run("full")
    assert all(loss > 0 for loss in full), "the data pass before training gives epoch 0 its targets"
    run("parted", "trainer.max_steps=3")
    assert run("parted") == full
