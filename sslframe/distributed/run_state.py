"""A training run's state in and out of checkpoints (docs/architecture.md, principle 5): what the
loop saves at a step and how a run resumes from a checkpoint, at any world size and strategy.

The checkpoint files themselves (DCP shards, per-rank files, metadata, atomic renames, safe
loading) are ``checkpoint.py``'s; this is the layer above: which state goes in, the checks on the
way back (same model config, finite weights), resharding through DCP, the optimizer state of
parameters the checkpoint had none for, and the per-rank state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed import ProcessGroup
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from sslframe.distributed import checkpoint as ckpt
from sslframe.distributed.collectives import all_reduce_max, local_shard
from sslframe.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Resumed:
    """A checkpoint the run resumed from: its folder, its step and this rank's own state (None
    when the checkpoint had none for this rank: resumed at a larger world size)."""

    path: Path
    step: int
    rank_state: dict[str, Any] | None


class RunState:
    """Saves and restores a run's model, optimizer (and GradScaler) keyed by parameter name, as
    this rank holds them (DTensor shards under FSDP2, whole tensors otherwise), plus each rank's
    own state. ``model`` is the unwrapped module whose parameters the optimizer steps."""

    def __init__(
        self,
        folder: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Any,
        config_hash: str,
        rank: int,
        group: ProcessGroup | None,
        device: torch.device,
    ) -> None:
        self.folder = folder
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.config_hash = config_hash
        self.rank = rank
        self.group = group
        self.device = device

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer (and scaler) by parameter name: the same names at every world size
        and strategy, which DCP reshards on load."""
        state = {
            "model": get_model_state_dict(self.model),
            "optimizer": get_optimizer_state_dict(self.model, self.optimizer),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def weights_finite(self) -> bool:
        """Whether every rank's weights are finite (one all-reduce)."""
        local = all(bool(torch.isfinite(local_shard(p.detach())).all()) for p in self.model.parameters())
        flag = all_reduce_max(torch.tensor([0.0 if local else 1.0], device=self.device), self.group)
        return float(flag) == 0.0

    def save(self, step: int, meta: dict[str, Any], rank_state: dict[str, Any], keep_last: int) -> Path:
        """A complete checkpoint of ``step``; never one holding non-finite weights."""
        if not self.weights_finite():
            raise UserError(
                f"the weights hold NaN or infinity at step {step}; no checkpoint written (the newest one "
                "is still complete). Lower optim.lr, set trainer.grad_clip, or use trainer.on_nan=stop to inspect"
            )
        meta = {**meta, "config_hash": self.config_hash}
        return ckpt.save_checkpoint(
            self.folder, step, self.state_dict(), meta, rank_state=rank_state, rank=self.rank, keep_last=keep_last
        )

    def find(self, choice: str) -> Path | None:
        """``trainer.resume``: ``never``, ``auto`` (the newest complete checkpoint here) or a path."""
        if choice == "never":
            return None
        if choice == "auto":
            return ckpt.latest_checkpoint(self.folder)
        return ckpt.resolve_checkpoint(choice)

    def resume(self, choice: str) -> Resumed | None:
        """Load the checkpoint ``choice`` names into model, optimizer and scaler (resharded to this
        run's world size and strategy); this rank's own state is returned for the loop to apply."""
        path = self.find(choice)
        if path is None:
            return None
        meta = ckpt.read_checkpoint_meta(path)
        ckpt.read_index(path)  # unreadable or crafted: say so before comparing configs
        if meta.get("config_hash") != self.config_hash:
            raise UserError(
                f"checkpoint '{path}' was written with a different model config (trunk/head/method); "
                "use another run.dir or trainer.resume=never"
            )
        # Filled in place. Parameters that never had a gradient yet (frozen prototypes) have no
        # optimizer state in the checkpoint.
        state = self.state_dict()
        absent = ckpt.load_state(path, state, required=("model",))
        # Hyperparameters come back with the optimizer state; the kernel choice (fused/foreach,
        # which depends on this run's strategy, not the saved one's) stays this run's.
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups]
        try:
            set_model_state_dict(self.model, state["model"])
            set_optimizer_state_dict(
                self.model, self.optimizer, state["optimizer"], options=StateDictOptions(strict=False)
            )
            for group, kernel in zip(self.optimizer.param_groups, kernels, strict=True):
                group.update(kernel)
            self._drop_optimizer_state(absent)
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"checkpoint '{path}' does not fit this model: {str(exc).splitlines()[0]}") from None
        own = ckpt.load_rank_state(path, self.rank, map_location="cpu")
        if own is None:
            log.warning("checkpoint %s has no state for rank %d; its RNG and queues start afresh", path, self.rank)
        return Resumed(path, int(meta["step"]), own)

    def _drop_optimizer_state(self, absent: list[str]) -> None:
        """Forget the optimizer state of parameters the checkpoint had none for. Building the
        state dict skeleton ran one zero-gradient step (torch's lazy state initialisation),
        which with weight decay leaves non-zero momentum; an uninterrupted run has no state
        there, so an exact resume must not either."""
        prefix = "optimizer.state."
        names = {key[len(prefix) :].rsplit(".", 1)[0] for key in absent if key.startswith(prefix)}
        if not names:
            return
        for name, param in self.model.named_parameters():
            if name in names:
                self.optimizer.state.pop(param, None)
