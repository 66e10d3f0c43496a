"""Parallelism strategies: FSDP2 matches DDP, activation checkpointing keeps gradients and saves
memory, and the options that cannot run here say why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslframe.config import compose_config
from sslframe.distributed.checkpoint import latest_checkpoint, load_checkpoint
from sslframe.distributed.parallelize import apply_activation_checkpointing
from sslframe.methods import StepContext, build_method
from tests.distributed.harness import free_port
from tests.distributed.test_torchrun import finish, metrics, torchrun, train_args
from tests.helpers import ROOT, TINY, tiny_config


def test_fsdp_matches_ddp(image_folder: Path, tmp_path: Path) -> None:
    runs = {}
    for strategy in ("ddp", "fsdp"):
        run = tmp_path / strategy
        # Contiguous layouts in both (FSDP2 keeps parameters contiguous) so that convolutions
        # use the same kernels; what remains is the reduction order of the gradient collectives.
        args = train_args(
            image_folder,
            run,
            f"distributed.strategy={strategy}",
            "trainer.max_epochs=2",
            "transform.backend=sample",
            "optim=sgd",
            "optim.lr=0.02",
            "trainer.channels_last=false",
            # bf16 (precision=auto on CPUs with AMX) runs as autocast under DDP and as FSDP's
            # parameter cast, which round differently; float32 compares the strategies alone.
            "trainer.precision=fp32",
        )
        finish(torchrun("--nproc_per_node=2", f"--master_port={free_port()}", *args))
        runs[strategy] = run
    ddp_losses = [r["loss"] for r in metrics(runs["ddp"])]
    fsdp_losses = [r["loss"] for r in metrics(runs["fsdp"])]
    assert len(ddp_losses) == 8
    # Same math, other reduction order (reduce-scatter vs all-reduce): equal to float32 rounding.
    torch.testing.assert_close(torch.tensor(fsdp_losses), torch.tensor(ddp_losses), rtol=1e-4, atol=1e-5)
    a, _ = load_checkpoint(latest_checkpoint(runs["ddp"] / "checkpoints"))
    b, _ = load_checkpoint(latest_checkpoint(runs["fsdp"] / "checkpoints"))
    assert set(a["model"]) == set(b["model"]), "FSDP must not change parameter names"
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_fsdp_in_bf16_trains_a_batch_norm_trunk(image_folder: Path, tmp_path: Path) -> None:
    """FSDP's bf16 parameter cast with batch norm (float32 running statistics): the norms are
    float32 units of their own, so the ResNet trains, and its statistics stay float32."""
    run = tmp_path / "run"
    args = train_args(image_folder, run, "distributed.strategy=fsdp", "trainer.precision=bf16", "trainer.max_steps=3")
    finish(torchrun("--nproc_per_node=2", f"--master_port={free_port()}", *args))
    records = metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    state, _ = load_checkpoint(latest_checkpoint(run / "checkpoints"), sections=("model",))
    assert state["model"]["trunk.bn1.weight"].dtype == torch.float32
    assert state["model"]["trunk.bn1.running_mean"].dtype == torch.float32
    assert state["model"]["trunk.layer1.0.conv1.weight"].dtype == torch.float32, "sharded weights stay float32"


def tiny_method(*extra: str):
    cfg = compose_config("train", ["config=quickstart", *TINY, "data=folder", "data.path=unused", *extra])
    return build_method(cfg)


def saved_activation_bytes(method, crops) -> tuple[int, dict[str, torch.Tensor]]:
    """Bytes autograd keeps for the backward pass (what activation checkpointing trades away)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = method.training_step(crops, StepContext(0, 0, 10, 10)).loss
    loss.backward()
    return total, {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}


def test_activation_checkpointing_same_gradients_less_memory() -> None:
    torch.manual_seed(0)
    plain = tiny_method("method.freeze_prototypes_steps=0")
    checkpointed = tiny_method("method.freeze_prototypes_steps=0")
    checkpointed.load_state_dict(plain.state_dict())
    apply_activation_checkpointing(checkpointed)
    assert set(dict(checkpointed.named_parameters())) == set(dict(plain.named_parameters()))
    crops = [torch.randn(8, 3, 16, 16) for _ in range(2)] + [torch.randn(8, 3, 8, 8) for _ in range(2)]
    plain_bytes, plain_grads = saved_activation_bytes(plain, crops)
    ckpt_bytes, ckpt_grads = saved_activation_bytes(checkpointed, crops)
    assert ckpt_bytes < 0.7 * plain_bytes
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, msg=name)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distributed.strategy=fairscale_fsdp", "fairscale_fsdp is not supported: fairscale 0.4.13"),
        ("model.sync_bn=true", "model.sync_bn=true needs CUDA"),
        ("trainer.precision=fp16", "trainer.precision=fp16 needs CUDA"),
    ],
)
def test_options_that_cannot_run_on_this_machine_say_why(
    image_folder: Path, tmp_path: Path, override: str, message: str
) -> None:
    if torch.cuda.is_available() and "CUDA" in message:
        pytest.skip("CUDA is present: this option runs here")
    result = subprocess.run(
        [sys.executable, *train_args(image_folder, tmp_path / "run", override)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_fsdp_in_a_single_process_runs_unsharded(image_folder: Path, tmp_path: Path) -> None:
    from sslframe.engine.trainer import train

    cfg = tiny_config(image_folder, tmp_path, "distributed.strategy=fsdp", "trainer.max_steps=2")
    assert train(cfg).final_step == 2
    assert json.loads((tmp_path / "checkpoints" / "step_00000002" / "meta.json").read_text())["world_size"] == 1


def test_bf16_losses_stay_close_to_fp32(image_folder: Path, tmp_path: Path) -> None:
    from sslframe.engine.trainer import train

    losses = {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        cfg = tiny_config(image_folder, run, f"trainer.precision={precision}", "trainer.max_steps=3")
        train(cfg)
        losses[precision] = torch.tensor([r["loss"] for r in metrics(run)])
    # bf16 keeps 8 bits of mantissa (relative rounding ~4e-3 per op); losses are computed in fp32.
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=2e-2, atol=0.0)
    assert not torch.equal(losses["bf16"], losses["fp32"]), "bf16 autocast must actually change the arithmetic"
