"""The ``trainer`` and ``distributed`` groups and the ``model`` and ``monitor`` sections: how the loop runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sslframe.registry import Choices


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    # Stop after this many optimizer steps (<= 0: no limit). The LR schedule always spans
    # max_epochs, so a run stopped early continues exactly when resumed with a larger limit.
    max_steps: int = 0
    checkpoint_every: int = 1000
    keep_last: int = 3
    # auto: newest complete checkpoint in run.dir/checkpoints; never; or a checkpoint path.
    resume: str = "auto"
    # auto: bf16 autocast where the hardware runs bf16 natively (CUDA, CPUs with AVX512-BF16/AMX),
    # fp32 elsewhere; the resolved value is what config.yaml records.
    precision: str = "auto"
    log_every: int = 50
    seed: int = 0
    grad_clip: float = 0.0
    # A step whose loss is NaN or infinite: skip its update and count it, or stop and dump the
    # step's inputs and state next to the run's checkpoints.
    on_nan: str = "skip"
    device: str = "auto"
    # Channels-last memory layout where the trunk is faster with it (``Trunk.channels_last_devices``:
    # ResNets on CPU and GPU, RegNets and timm conv nets on GPU; bench/throughput.py measures it).
    channels_last: bool = True
    # torch.compile each trunk block.
    compile: bool = False
    progress: bool = True
    # Gradient accumulation: the trunk runs each rank's batch in this many micro-batches, each
    # recomputed in backward, so its activations take 1/N of the memory; losses still see the whole
    # batch (exact for every method; trunk batch norm normalises per micro-batch). One more trunk
    # forward per step. sslframe/distributed/micro_batches.py; README, "Gradient accumulation".
    accumulate: int = 1
    # Resuming on another number of ranks than the checkpoint's (a job requeued on fewer nodes):
    # keep_global_batch sets the per-rank batch to the checkpoint's global batch / ranks (the
    # optimisation continues unchanged); keep_per_rank_batch keeps data.batch_size, so the global
    # batch, the scaled learning rate and the steps per epoch change, and the step is mapped to
    # the same number of images seen. The change is logged and recorded in RUN/events.jsonl.
    on_world_size_change: str = "keep_global_batch"
    choices: ClassVar[Choices] = {
        "precision": ("auto", "fp32", "bf16", "fp16"),
        "device": ("auto", "cpu", "cuda"),
        "on_nan": ("skip", "stop"),
        "on_world_size_change": ("keep_global_batch", "keep_per_rank_batch"),
    }
    minimums: ClassVar[dict[str, int]] = {"accumulate": 1, "max_epochs": 1, "log_every": 1, "checkpoint_every": 1}


@dataclass
class DistributedConfig:
    """How the model is spread over processes (the process group comes from torchrun/SLURM)."""

    name: str = "distributed"
    # none: no wrapper; ddp: replicate and all-reduce gradients; fsdp: PyTorch FSDP2
    # (fully_shard per trunk block and head); fairscale_fsdp: explains why it is unavailable.
    strategy: str = "ddp"
    reshard_after_forward: bool = True
    # Recompute each trunk block's activations in backward (less memory, ~1/3 more compute).
    activation_checkpointing: bool = False
    # A collective that does not complete in this many seconds fails the run, naming the ranks
    # that stopped answering (sslframe/distributed/heartbeat.py); a stopped, hung or lost rank
    # then ends the job instead of holding it until its time limit.
    timeout_s: int = 1800
    choices: ClassVar[Choices] = {"strategy": ("none", "ddp", "fsdp", "fairscale_fsdp")}
    minimums: ClassVar[dict[str, int]] = {"timeout_s": 1}


@dataclass
class ModelConfig:
    # SyncBatchNorm across ranks (CUDA/NCCL only).
    sync_bn: bool = False


@dataclass
class MonitorConfig:
    """Observers of pretraining (sslframe/engine/monitors.py); they never change training."""

    # Online kNN top-1 every this many steps (0: off; a multiple of trainer.log_every lines it up
    # with the logged records): the first knn_val_per_class images of each class of data.val_path
    # against the first knn_train_per_class of data.path.
    knn_every: int = 0
    knn_train_per_class: int = 50
    knn_val_per_class: int = 20
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_batch_size: int = 256
    # Online linear probe (0: off): a linear classifier trained every step on the detached trunk
    # features of the first view and the batch's labels, with an optimizer of its own (training is
    # unchanged); its accuracy on the held-out kNN subset every this many steps.
    linear_every: int = 0
    linear_lr: float = 0.1
    # Embedding std and effective rank per step, averaged per logging interval; warn below these.
    collapse: bool = True
    min_std: float = 0.01
    min_effective_rank: float = 2.0
