"""tools/plan.py: counts against direct counting on real tensors, the memory model against
memory measured on the CPU, and the published SEER facts."""

from __future__ import annotations

import ctypes
import gc
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sslframe.config import compose_config
from sslframe.methods import StepContext, build_method
from sslframe.models.trunks.regnet import RegNet
from sslframe.models.trunks.resnet import ResNet
from sslframe.planner.measure import count_parameters, flop_counter, measure_step, trunk_forward_flops
from sslframe.planner.plan import GB, make_plan
from tests.helpers import run_tool

SMALL = ["config=quickstart", "trunk.width_multiplier=0.5", "trunk.small_images=true", "data.path=unused"]


def direct_conv_linear_flops(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Forward FLOPs of every convolution and linear layer, from their real output shapes
    (2 per multiply-add), and the first layer's share (its input needs no gradient)."""
    flops: list[float] = []

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            flops.append(2.0 * output.numel() * k)
        elif isinstance(module, nn.Linear):
            flops.append(2.0 * output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(flops), flops[0]


@pytest.mark.parametrize("trunk", [ResNet("resnet18", width_multiplier=0.25), RegNet("regnet_y_400mf")])
def test_flops_match_direct_counting(trunk: nn.Module) -> None:
    # RegNet's grouped convolutions are the case torch's own backward formula over-counts.
    x = torch.randn(2, 3, 64, 64)
    forward, stem = direct_conv_linear_flops(trunk, x)
    assert trunk_forward_flops(trunk, 64) == pytest.approx(forward / 2, rel=1e-9)
    with flop_counter() as counter:
        trunk(x).sum().backward()
    # Backward: input and weight gradients each cost a forward, except the stem's input gradient.
    assert counter.get_total_flops() == pytest.approx(3 * forward - stem, rel=1e-9)


def test_parameters_counted_on_meta_match_the_real_model() -> None:
    cfg = compose_config("train", SMALL)
    real = build_method(cfg)
    with torch.device("meta"):
        meta = build_method(cfg)
    counted = count_parameters(meta)
    assert counted.total == sum(p.numel() for p in real.parameters())
    assert counted.trunk == sum(p.numel() for p in real.trunk.parameters())
    assert counted.largest_unit >= max(sum(p.numel() for p in b.parameters()) for b in real.trunk.blocks())


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def heap_in_use() -> int:
    """Bytes glibc's allocator has handed out (arena chunks plus mmap'ed blocks): what torch's
    CPU tensors occupy."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def test_memory_model_against_memory_measured_on_cpu() -> None:
    try:
        heap_in_use()
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2 to read the heap")
    cfg = compose_config("train", [*SMALL, "optim=sgd", "optim.weight_decay=0.0"])
    sizes = [28, 28, 16, 16, 16, 16]
    batch = 32
    torch.manual_seed(0)
    method = build_method(cfg)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    crops = [torch.randn(batch, 3, s, s) for s in sizes]
    ctx = StepContext(step=1000, epoch=0, steps_per_epoch=1, total_steps=2000)

    def step(probe: list[int] | None) -> None:
        hooks = []
        if probe is not None:

            def sample(*_: object) -> None:
                probe.append(heap_in_use())

            def forward_hook(_m: nn.Module, _i: tuple, output: object) -> None:
                # Sample now, and again when backward reaches this output's gradient.
                sample()
                if isinstance(output, torch.Tensor) and output.requires_grad:
                    output.register_hook(sample)

            hooks = [m.register_forward_hook(forward_hook) for m in method.modules()]
        method.training_step(crops, ctx).loss.backward()
        if probe is not None:
            probe.append(heap_in_use())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for h in hooks:
            h.remove()

    step(None)  # creates the momentum buffers
    gc.collect()
    base = heap_in_use()  # parameters and optimizer state are in here
    out = method.training_step(crops, ctx)
    after_forward = heap_in_use() - base
    out.loss.backward()
    optimizer.zero_grad(set_to_none=True)
    del out
    gc.collect()
    base = heap_in_use()
    probe: list[int] = []
    step(probe)
    peak = max(probe) - base

    with torch.device("meta"):
        meta = build_method(cfg)
    cost = measure_step(meta, sizes, batch, torch.float32)
    predicted_activations = cost.activation_bytes * batch
    grads = 4 * count_parameters(meta).total
    # Activations: autograd's saved tensors are what the forward leaves allocated (measured:
    # within 1%; the rest is the loss's small temporaries).
    assert after_forward == pytest.approx(predicted_activations, rel=0.05)
    # The model adds every gradient to every activation; backward frees activations while it
    # allocates gradients, so the measured peak lies a little below that sum.
    assert 0.85 * (predicted_activations + grads) <= peak <= 1.05 * (predicted_activations + grads)


def plan_for(*overrides: str) -> dict:
    return make_plan(compose_config("plan", list(overrides)))


def test_seer_10b_fits_a100_40gb_only_sharded_with_checkpointing() -> None:
    # Goyal et al. 2022: 16 images per A100-40GB, FSDP and activation checkpointing, 496 GPUs.
    report = plan_for("config=seer_regnet_10b")
    assert report["config"]["batch_per_gpu"] == 16 and report["config"]["gpus"] == 496
    assert report["config"]["crops"] == [160, 160, 96, 96, 96, 96]
    fits = {(s["strategy"], s["activation_checkpointing"]): s["fits"] for s in report["memory_per_gpu"]}
    assert fits == {("fsdp", True): True, ("fsdp", False): False, ("ddp", True): False, ("ddp", False): False}
    assert report["chosen"]["fits"]
    assert 9.0e9 < report["parameters"]["total"] < 10.5e9


def test_dinov2_giant_is_planned_and_fits_only_sharded_with_checkpointing() -> None:
    # DINOv2's ViT-g/14 (Oquab et al. 2024, sec. 5: 1.1B parameters) with its EMA teacher, two
    # heads each, 2 x 224 + 8 x 98 crops, 64 images per GPU on 32 A100-40GB.
    report = plan_for("config=dinov2_vit_giant", "launcher.nodes=4", "launcher.gpus_per_node=8")
    assert abs(report["parameters"]["trunk"] - 1.1e9) / 1.1e9 < 0.04
    assert report["parameters"]["frozen"] == report["parameters"]["total"]  # the teacher: trunk and both heads
    assert report["config"]["crops"] == [224, 224, *[98] * 8]
    fits = {(s["strategy"], s["activation_checkpointing"]): s["fits"] for s in report["memory_per_gpu"]}
    assert fits[("fsdp", True)] and not fits[("fsdp", False)] and not fits[("ddp", False)]
    assert report["chosen"]["fits"]


def test_regnety_256gf_has_the_published_parameter_count() -> None:
    # "RegNetY with 1.3B parameters" (Goyal et al. 2021, abstract); the trunk alone.
    report = plan_for("config=seer_regnety_256gf")
    assert round(report["parameters"]["trunk"] / 1e8) / 10 == 1.3
    ddp = next(s for s in report["memory_per_gpu"] if s["strategy"] == "ddp" and not s["activation_checkpointing"])
    # DDP holds fp32 parameters, gradients and momentum whole: 3 x 4 bytes per parameter.
    assert ddp["gb"]["parameters"] + ddp["gb"]["gradients"] + ddp["gb"]["optimizer"] == pytest.approx(
        12 * report["parameters"]["total"] / GB
    )


def test_frozen_teacher_costs_its_weights_only() -> None:
    # BYOL keeps an EMA copy of trunk + projector (Grill et al. 2020, sec. 3.1): its weights take
    # memory, but it has no gradients and no optimizer state.
    report = plan_for("config=byol_resnet50", "trunk.arch=resnet18")
    params = report["parameters"]
    # The copy is trunk + projector: more than the trunk, less than trunk + projector + predictor.
    assert params["trunk"] < params["frozen"] < params["total"]
    ddp = next(s for s in report["memory_per_gpu"] if s["strategy"] == "ddp" and not s["activation_checkpointing"])
    assert ddp["gb"]["parameters"] == pytest.approx(4 * (params["total"] + params["frozen"]) / GB)
    assert ddp["gb"]["gradients"] == pytest.approx(4 * params["total"] / GB)


def test_tool_prints_a_summary_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    proc = run_tool(
        "plan.py",
        "config=swav_regnet",
        "trunk.arch=regnet_y_400mf",
        "launcher.nodes=2",
        "launcher.gpus_per_node=4",
        "plan.gpu_memory_gb=16",
        "plan.images=1000000",
        f"plan.out={out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "fits" in proc.stdout and "images/s" in proc.stdout and "h for 1,000,000 images" in proc.stdout
    report = json.loads(out.read_text())
    assert report["config"]["gpus"] == 8 and report["config"]["global_batch"] == 8 * 64
    assert report["throughput"]["hours"] > 0
    bad = run_tool("plan.py", "config=swav_regnet", "plan.mfuu=0.5")
    assert bad.returncode == 2 and "unknown key 'plan.mfuu'" in bad.stderr
