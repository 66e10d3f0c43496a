"""The training step never waits for the device: a non-finite loss skips the update on the device
(optimizers and EMA targets gated by a flag tensor), and the loop reads each step's flags one step
later, or at logging and checkpoint steps. Nor does it copy host tensors to the device on the
way: ``HostTensorWatch`` finds, on the CPU, every place that would synchronise a CUDA stream."""

from __future__ import annotations

import contextlib
import math
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from sslframe.config import compose_config
from sslframe.engine.trainer import Trainer
from sslframe.models.ema import ema_update_
from sslframe.optim.build import OPTIMIZERS, parameter_groups, step_unless
from tests.helpers import TINY

# Everything through which the host reads a tensor's value (and so waits for the device).
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


# Factories: without a device they make a host tensor; torch.tensor and friends copy Python data.
FACTORIES = {
    torch.tensor, torch.as_tensor, torch.scalar_tensor, torch.from_numpy, torch.zeros, torch.ones, torch.empty,
    torch.full, torch.arange, torch.linspace, torch.rand, torch.randn, torch.randint, torch.randperm, torch.eye,
}  # fmt: skip
FROM_PYTHON = {torch.tensor, torch.as_tensor, torch.scalar_tensor}
COPIES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_}


class HostTensorWatch(TorchFunctionMode):
    """Records what would make a CUDA step wait for, or copy from, the host, on a CPU run:

    - a device tensor built from Python numbers or lists (``torch.tensor(x, device=...)``);
    - a host tensor (made by a factory without a device, or computed from such tensors) copied to
      the device other than without waiting (``non_blocking=True`` from page-locked memory; on a
      CPU run the target is the CPU, where that cannot be told apart, so non-blocking is enough);
    - a host tensor of more than one element used in an operation on device tensors (an implicit
      copy: indexing a device tensor with host indices, adding host positions to tokens);
    - a value read on the host (``item``, ``bool``...) from a device tensor (reads of host
      tensors are host work and do not wait for the device).
    """

    def __init__(self) -> None:
        super().__init__()
        # id -> weak reference: host tensors, without keeping them alive or comparing their values.
        self.host: dict[int, weakref.ref] = {}
        self.problems: list[str] = []

    def report(self, what: str) -> None:
        """``what``, and where in sslframe it happened."""
        frames = [f for f in traceback.extract_stack() if "/sslframe/" in f.filename]
        where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        self.problems.append(what + where)

    def is_host(self, t: object) -> bool:
        ref = self.host.get(id(t))
        return ref is not None and ref() is t

    def _mark(self, out: Any) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.host[id(t)] = weakref.ref(t)

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in FACTORIES:
            if func in FROM_PYTHON and kwargs.get("device") is not None:
                self.report(f"{func.__name__}(..., device=) builds a device tensor from Python data")
            out = func(*args, **kwargs)
            if kwargs.get("device") is None:
                self._mark(out)
            return out
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        host = [t for t in inputs if self.is_host(t)]
        out = func(*args, **kwargs)
        if func in COPIES:
            source = args[1] if func is torch.Tensor.copy_ else args[0]
            moves = (
                func is not torch.Tensor.to
                or any(isinstance(a, (torch.device, str)) for a in args[1:])
                or "device" in kwargs
            )
            if self.is_host(source) and moves and not kwargs.get("non_blocking", False):
                self.report(f"{func.__name__}: a host tensor copied to the device, waiting for it")
            if self.is_host(source) and not moves:
                self._mark(out)  # a dtype change stays on the host
            elif moves and isinstance(out, torch.Tensor):
                self.host.pop(id(out), None)  # moved: the device's now (on the CPU ``to`` may return its input)
            return out
        if host and len(host) < len(inputs) and any(t.numel() > 1 for t in host):
            self.report(f"{getattr(func, '__name__', func)}: a host tensor used with device tensors")
        if host and len(host) == len(inputs):
            self._mark(out)
        return out


@contextlib.contextmanager
def watched_step(watch: HostTensorWatch) -> Iterator[list[str]]:
    """Within the block: ``watch`` sees every torch call, and host reads of device tensors are listed."""
    reads: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def wrapper(self: torch.Tensor, *args: object, _name: str = name, _original: Any = original) -> object:
                if not watch.is_host(self):
                    reads.append(_name)
                return _original(self, *args)

            patch.setattr(torch.Tensor, name, wrapper)
        with watch:
            yield reads


TINY_VIT = ["trunk=vit", "trunk.arch=vit_tiny", "trunk.embed_dim=32", "trunk.depth=2", "trunk.num_heads=4"]
TINY_VIT += ["trunk.patch_size=4", "trunk.image_size=16", "transform.local_crops=0"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["config=quickstart"],  # SwAV, LARS
        ["config=quickstart", "method.queue_length=16", "method.queue_start_epoch=0"],  # full from step 3
        ["config=quickstart_simclr", "optim=sgd"],
        ["config=byol_resnet50", "method.predictor_hidden_dims=[32]", "transform.local_crops=0", "optim=adamw"],
        ["config=dino_resnet50", "head.hidden_dims=[32,32]", "method.out_dim=32"],  # EMA teacher, centre
        ["config=mocov2_resnet50", "method.queue_length=32", "transform.local_crops=0"],  # EMA keys, queue, split BN
        ["config=mocov3_resnet50", "method.predictor_hidden_dim=32", "transform.local_crops=0"],
        ["config=simsiam_resnet50", "head.hidden_dims=[32,32]", "method.predictor_hidden_dims=[8]"],
        ["config=barlowtwins_resnet50", "head.hidden_dims=[32,32]", "head.output_dim=32", "optim.bias_lr_factor=1"],
        ["config=vicreg_resnet50", "head.hidden_dims=[32,32]", "head.output_dim=32"],
        ["config=mae_vit_base", "method.decoder_dim=16", "method.decoder_depth=1", "method.decoder_heads=2"],
        ["config=ijepa_vit_huge", "method.predictor_dim=16", "method.predictor_depth=1", "method.predictor_heads=2"],
    ],
    ids=[
        "swav-lars", "swav-queue", "simclr-sgd", "byol-adamw", "dino", "mocov2", "mocov3", "simsiam",
        "barlowtwins", "vicreg", "mae", "ijepa",
    ],
)  # fmt: skip
def test_train_step_neither_reads_from_nor_copies_to_the_device(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]
) -> None:
    """Every method's step through the Trainer (except DeepCluster-v2, which decides on the host
    when to re-cluster): nothing read from the device, nothing copied to it that would wait."""
    vit = any("vit" in o for o in overrides)
    tiny = [o for o in TINY if not o.startswith("trunk")] + TINY_VIT if vit else TINY
    extra = [*tiny, "data=folder", f"data.path={image_folder}", f"run.dir={tmp_path}"]
    cfg = compose_config("train", [*overrides, *extra, "trainer.max_steps=3"])
    trainer = Trainer(cfg)
    reads: list[list[str]] = []
    problems: list[list[str]] = []
    original = trainer.train_step

    def watched(*args: object) -> object:
        watch = HostTensorWatch()
        with watched_step(watch) as step_reads:
            result = original(*args)  # type: ignore[arg-type]
        reads.append(step_reads)
        problems.append(watch.problems)
        return result

    monkeypatch.setattr(trainer, "train_step", watched)
    trainer.fit()
    assert reads == [[], [], []], reads
    # The first step may build what is cached for the later ones (sine-cosine positions).
    assert problems[1:] == [[], []], problems


def test_host_tensor_watch_finds_what_it_must() -> None:
    """The watch itself: each kind of host synchronisation it must report, and what it must not."""
    device_tensor = torch.randn(4, 3)
    cases = {
        "python data": lambda: torch.tensor(2.0, device=device_tensor.device) * device_tensor,
        "blocking copy": lambda: torch.arange(3).to(device_tensor.device) + device_tensor,
        "implicit copy": lambda: device_tensor + torch.arange(3.0),
        "host indices": lambda: device_tensor[torch.arange(2)],
        "derived host tensor": lambda: (torch.arange(3.0) * 2).sin().to(device_tensor.device),
    }
    for name, step in cases.items():
        watch = HostTensorWatch()
        with watch:
            step()
        assert watch.problems, name
    fine = {
        "device factory": lambda: torch.zeros(3, device=device_tensor.device) + device_tensor,
        "non-blocking staging": lambda: torch.tensor([1.0, 2.0, 3.0]).to(device_tensor.device, non_blocking=True),
        "host scalar": lambda: device_tensor * torch.tensor(2.0),
        "host-only work": lambda: torch.rand(2).tolist(),
        "fill from a number": lambda: device_tensor.new_full((), 3.0) + device_tensor,
    }
    for name, step in fine.items():
        watch = HostTensorWatch()
        with watch:
            step()
        assert not watch.problems, (name, watch.problems)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))


def optimizer_for(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    cfg = compose_config("train", [f"optim={name}"]).optim
    groups = parameter_groups(model, 0.01, True)
    optimizer = OPTIMIZERS.get(name)(groups, cfg)
    for group in optimizer.param_groups:
        group["lr"] = 0.1
    return optimizer


def set_grads(model: torch.nn.Module, value: float | None = None) -> None:
    for i, p in enumerate(model.parameters()):
        g = torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
        p.grad = torch.full_like(p, value) if value is not None else g


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    state = [t.clone() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return [p.detach().clone() for p in model.parameters()] + state


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_a_skipped_step_leaves_weights_and_state_bit_identical(name: str) -> None:
    model = tiny_model()
    optimizer = optimizer_for(name, model)
    for value in (None, math.nan, math.inf):
        set_grads(model)
        step_unless(optimizer, torch.zeros(1))  # a real step first, so the state exists
        before = snapshot(model, optimizer)
        set_grads(model, value)
        step_unless(optimizer, torch.ones(1))
        after = snapshot(model, optimizer)
        assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert not hasattr(optimizer, "found_inf"), "the flag is removed after the step"


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_a_step_that_is_not_skipped_is_the_plain_step(name: str) -> None:
    """Two steps through ``step_unless(flag 0)`` against the same optimizer's plain ``step()``
    (for LARS, its ungated code path; for SGD/AdamW, PyTorch's fused kernel either way)."""
    gated_model, plain_model = tiny_model(), tiny_model()
    gated, plain = optimizer_for(name, gated_model), optimizer_for(name, plain_model)
    for _ in range(2):
        set_grads(gated_model)
        set_grads(plain_model)
        step_unless(gated, torch.zeros(1))
        plain.step()
    for a, b in zip(gated_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_first_sgd_step_after_a_skipped_one_is_the_usual_first_step() -> None:
    """PyTorch's fused SGD leaves momentum buffers uninitialised when its first step is
    skipped; ours start at zero, so the first real step is buffer = gradient, as always."""
    skipped_model, fresh_model = tiny_model(), tiny_model()
    skipped, fresh = optimizer_for("sgd", skipped_model), optimizer_for("sgd", fresh_model)
    set_grads(skipped_model, math.nan)
    step_unless(skipped, torch.ones(1))
    for model, optimizer in ((skipped_model, skipped), (fresh_model, fresh)):
        set_grads(model)
        step_unless(optimizer, torch.zeros(1))
    for a, b in zip(skipped_model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_ema_update_is_gated_by_the_skip_flag() -> None:
    online, target = tiny_model(), tiny_model()
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(3.0)
    before = [t.clone() for t in target.state_dict().values()]
    ema_update_(target, online, 0.9, torch.ones(1))
    assert all(torch.equal(a, b) for a, b in zip(before, target.state_dict().values(), strict=True))
    reference = tiny_model()
    ema_update_(reference, online, 0.9)
    ema_update_(target, online, 0.9, torch.zeros(1))
    for a, b in zip(reference.state_dict().values(), target.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
