"""Typed schemas for every config group.

Each option file under ``configs/<group>/`` extends one of these dataclasses (through its
defaults list), so Hydra type-checks values while composing. ``validate`` then checks the
whole composed config again (unknown keys, missing values, choices) before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

# Choice fields name a callable returning the valid values, so registries filled by other
# modules are read only when validating (no import cycles).
Choices = dict[str, Any]


@dataclass
class RunConfig:
    dir: str = "runs/default"


@dataclass
class ResNetConfig:
    """ResNet / ResNeXt / wide ResNet trunks (He et al. 2016; Xie et al. 2017; SwAV's wide R50)."""

    name: str = "resnet"
    arch: str = "resnet50"
    # Extra multiplier on every width (the SwAV-style widening lives in ``arch``: resnet50w2...).
    width_multiplier: float = 1.0
    # CIFAR-style stem for small images: 3x3 stride-1 convolution and no max-pool.
    small_images: bool = False
    # Whether the stem ends with a 3x3 stride-2 max-pool; null: the stem's default (yes for the
    # ImageNet stem, no for the small-image one).
    max_pool: bool | None = None
    zero_init_residual: bool = False
    # batch | group: group norm keeps results independent of the per-rank batch split.
    norm: str = "batch"
    choices: ClassVar[Choices] = {"arch": "resnet_archs", "norm": "norms"}


@dataclass
class RegNetConfig:
    """RegNet X/Y trunks from the RegNet design-space parameters (Radosavovic et al. 2020)."""

    name: str = "regnet"
    arch: str = "regnety_16gf"
    small_images: bool = False
    choices: ClassVar[Choices] = {"arch": "regnet_archs"}


@dataclass
class ViTConfig:
    """Vision Transformer trunks (Dosovitskiy et al. 2021; tiny and small from Touvron et al. 2021)."""

    name: str = "vit"
    arch: str = "vit_base"
    patch_size: int = 16
    # Image side the learned position embeddings are made for; other sides interpolate them.
    image_size: int = 224
    # sincos: fixed 2-D sine-cosine (MAE, I-JEPA, MoCo v3); learned: trained parameters.
    pos_embed: str = "sincos"
    class_token: bool = True
    # Pooled feature: the class token after the final norm, or the mean of the patch tokens.
    pool: str = "cls"
    # 0 keeps the arch's value (MoCo v3's ViT-S uses 12 heads; tests use tiny widths).
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    choices: ClassVar[Choices] = {
        "arch": ("vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge"),
        "pos_embed": ("sincos", "learned"),
        "pool": ("cls", "mean"),
    }


@dataclass
class TimmTrunkConfig:
    """Any timm model, built without pretrained weights (``name`` is the timm model name)."""

    # The trunk registry key: ``name`` is taken by the timm model name here.
    family: str = "timm"
    name: str = "resnet18"


@dataclass
class MLPHeadConfig:
    """Projection head: Linear (+BN) + activation per hidden layer, then a Linear output."""

    name: str = "mlp"
    hidden_dims: list[int] = field(default_factory=lambda: [2048])
    output_dim: int = 128
    batch_norm: bool = True
    last_batch_norm: bool = False
    activation: str = "relu"
    choices: ClassVar[Choices] = {"activation": ("relu", "gelu")}


@dataclass
class SwAVConfig:
    """SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp cluster codes."""

    name: str = "swav"
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    num_prototypes: list[int] = field(default_factory=lambda: [3000])
    crops_for_assign: list[int] = field(default_factory=lambda: [0, 1])
    queue_length: int = 0
    queue_start_epoch: int = 15
    freeze_prototypes_steps: int = 313


@dataclass
class SimCLRConfig:
    """SimCLR (Chen et al. 2020): NT-Xent contrastive loss between two views."""

    name: str = "simclr"
    temperature: float = 0.1


@dataclass
class BarlowTwinsConfig:
    """Barlow Twins (Zbontar et al. 2021): cross-correlation of two views pushed to the identity."""

    name: str = "barlowtwins"
    # Weight of the off-diagonal (redundancy reduction) term, lambda in eq. 1.
    lambda_offdiag: float = 0.0051


@dataclass
class VICRegConfig:
    """VICReg (Bardes et al. 2022): invariance + variance hinge + covariance decorrelation (eq. 6)."""

    name: str = "vicreg"
    # lambda, mu and nu of eq. 6.
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    # Target standard deviation of each dimension and the epsilon under the square root (eq. 1).
    gamma: float = 1.0
    eps: float = 1e-4


@dataclass
class DeepClusterV2Config:
    """DeepCluster-v2 (Caron et al. 2020, SwAV paper appendix): predict k-means clusters of last epoch's features."""

    name: str = "deepclusterv2"
    temperature: float = 0.1
    # One k-means (and one prototype set) per entry.
    num_prototypes: list[int] = field(default_factory=lambda: [3000, 3000, 3000])
    # Crops whose projections fill the memory bank; prototype set j clusters crop j modulo their count.
    crops_for_assign: list[int] = field(default_factory=lambda: [0, 1])
    kmeans_iterations: int = 10


@dataclass
class MoCoV2Config:
    """MoCo v2 (Chen et al. 2020, "Improved baselines"): InfoNCE against a queue of momentum-encoder keys."""

    name: str = "mocov2"
    temperature: float = 0.2
    # Key encoder momentum (constant, He et al. 2020 sec. 3.2).
    momentum: float = 0.999
    queue_length: int = 65536
    # Shuffle the key encoder's batch across ranks so batch norm cannot leak the positive (sec. 3.3).
    shuffle_bn: bool = True
    # In one process (no ranks to shuffle across), shuffle-BN's substitute from the authors'
    # CIFAR-10 demo: batch norm over this many groups of the batch, keys shuffled before grouping
    # (1: off). The per-process batch must be a multiple of it.
    bn_splits: int = 8


@dataclass
class BYOLConfig:
    """BYOL (Grill et al. 2020): predict an EMA target's projection; momentum 0.996 -> 1 (cosine)."""

    name: str = "byol"
    base_momentum: float = 0.996
    predictor_hidden_dims: list[int] = field(default_factory=lambda: [4096])


@dataclass
class SimSiamConfig:
    """SimSiam (Chen & He 2021): predictor + stop-gradient, symmetric negative cosine."""

    name: str = "simsiam"
    predictor_hidden_dims: list[int] = field(default_factory=lambda: [512])


@dataclass
class DINOConfig:
    """DINO (Caron et al. 2021): self-distillation to an EMA teacher with centering and sharpening.

    The ``head`` group gives the MLP part of the DINO head (its ``output_dim`` is the bottleneck).
    """

    name: str = "dino"
    out_dim: int = 65536
    # Fix the last layer's weight-norm scale to 1 (False: learn it; the ViT-S recipe).
    norm_last_layer: bool = True
    base_momentum: float = 0.996
    student_temperature: float = 0.1
    teacher_temperature: float = 0.07
    warmup_teacher_temperature: float = 0.04
    warmup_teacher_temperature_epochs: int = 30
    center_momentum: float = 0.9
    # The last layer receives no update during these first epochs.
    freeze_last_layer_epochs: int = 1


@dataclass
class MoCoV3Config:
    """MoCo v3 (Chen, Xie, He 2021): symmetric InfoNCE against a momentum encoder, no queue."""

    name: str = "mocov3"
    temperature: float = 0.2
    # Base of the cosine momentum schedule (rises to 1 over training).
    momentum: float = 0.99
    predictor_hidden_dim: int = 4096
    # The ViT recipe ends the predictor with batch norm; the ResNet-50 one does not.
    predictor_last_batch_norm: bool = True
    # Random, frozen patch projection for ViTs (the paper's stability trick, sec. 4.2).
    freeze_patch_embed: bool = False


@dataclass
class MAEConfig:
    """MAE (He et al. 2022): reconstruct randomly masked patches from the visible ones."""

    name: str = "mae"
    mask_ratio: float = 0.75
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    # Target = pixels of each patch normalised by the patch's own mean and std.
    norm_pix_loss: bool = True


@dataclass
class IJEPAConfig:
    """I-JEPA (Assran et al. 2023): predict target-block features of an EMA encoder from a context block."""

    name: str = "ijepa"
    num_targets: int = 4
    target_scale: list[float] = field(default_factory=lambda: [0.15, 0.2])
    target_aspect: list[float] = field(default_factory=lambda: [0.75, 1.5])
    context_scale: list[float] = field(default_factory=lambda: [0.85, 1.0])
    context_aspect: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # Fewest context patches accepted before a block layout is sampled again.
    min_context: int = 10
    predictor_dim: int = 384
    predictor_depth: int = 12
    predictor_heads: int = 16
    # EMA momentum of the target encoder, linear from the first value to the second.
    momentum: list[float] = field(default_factory=lambda: [0.996, 1.0])
    # smooth_l1: the authors' released code (src/train.py: F.smooth_l1_loss), which the published
    # numbers come from; l2: squared L2 per patch (the paper's eq. 1).
    loss: str = "smooth_l1"
    choices: ClassVar[Choices] = {"loss": ("l2", "smooth_l1")}


@dataclass
class DataConfig:
    """Where images come from and how they are batched (``batch_size`` is per process)."""

    name: str = "folder"
    source: str = "folder"
    path: str = MISSING
    # Held-out split used by evaluation (kNN memory bank is ``path``, queries are ``val_path``).
    val_path: str = ""
    batch_size: int = 64
    num_workers: int = 4
    prefetch_factor: int = 2
    persistent_workers: bool = True
    # Page-locked batches for faster host-to-GPU copies (used only when training on CUDA).
    pin_memory: bool = True
    drop_last: bool = True
    # Stop when more than this fraction of the samples read so far were unreadable.
    max_bad_fraction: float = 0.01
    # shards: samples each loader worker holds for buffer-level shuffling (0: shard order only).
    shuffle_buffer: int = 1000
    choices: ClassVar[Choices] = {"source": "data_sources"}


@dataclass
class MultiCropConfig:
    """Multi-crop views (SwAV) with the SimCLR augmentation set; probabilities per view.

    ``blur_p`` and ``solarize_p`` are lists cycled over the global crops (BYOL-style
    asymmetric views use two values); local crops use ``local_blur_p``/``local_solarize_p``.
    """

    name: str = "multicrop"
    # "sample": torchvision v2 per image in the loader workers; "batch": the same recipe on whole
    # batches in the training process (CPU or GPU), far cheaper for small images.
    backend: str = "sample"
    # Image decoding: torchvision.io (libjpeg-turbo; PIL for formats it lacks) or PIL only.
    decoder: str = "torchvision"
    global_crops: int = 2
    global_size: int = 224
    global_scale: list[float] = field(default_factory=lambda: [0.14, 1.0])
    local_crops: int = 6
    local_size: int = 96
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])
    flip_p: float = 0.5
    jitter_strength: float = 1.0
    # Brightness, contrast, saturation, hue factors, each multiplied by jitter_strength.
    jitter: list[float] = field(default_factory=lambda: [0.8, 0.8, 0.8, 0.2])
    # Hue jitter: "yiq" rotates the chroma plane (one 3 x 3 matrix per view, ~100x cheaper);
    # "hsv" is torchvision's exact HSV hue shift (the papers' recipe, ~14 ms per 224 px crop).
    hue_space: str = "yiq"
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: list[float] = field(default_factory=lambda: [0.5])
    local_blur_p: float = 0.5
    solarize_p: list[float] = field(default_factory=lambda: [0.0])
    local_solarize_p: float = 0.0
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    choices: ClassVar[Choices] = {
        "backend": ("sample", "batch"),
        "decoder": ("torchvision", "pil"),
        "hue_space": ("yiq", "hsv"),
    }


@dataclass
class OptimConfig:
    """Optimizer. ``lr`` is the peak rate at ``base_batch_size`` images per step; the rate used
    is ``lr * global_batch / base_batch_size`` (linear scaling, Goyal et al. 2017), or ``lr``
    unchanged when ``base_batch_size`` is 0."""

    name: str = "sgd"
    lr: float = 0.1
    base_batch_size: int = 256
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    # LARS trust coefficient (eta in You et al. 2017).
    trust_coefficient: float = 0.001
    # Biases and normalisation parameters get no weight decay and no LARS adaptation.
    exclude_bias_and_norm: bool = True
    # Their learning rate relative to the weights' (Barlow Twins: 0.0048 / 0.2 = 0.024).
    bias_lr_factor: float = 1.0
    choices: ClassVar[Choices] = {"name": "optimizers"}


@dataclass
class ScheduleConfig:
    """Per-iteration learning-rate schedule: linear warmup, then cosine (or constant)."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    # Warmup starts at ``warmup_start_factor * peak`` and cosine ends at ``final_factor * peak``.
    warmup_start_factor: float = 0.0
    final_factor: float = 0.0
    # Weight decay on a half cosine from optim.weight_decay to this value (DINO, I-JEPA);
    # None keeps optim.weight_decay constant.
    final_weight_decay: float | None = None
    choices: ClassVar[Choices] = {"name": "schedules"}


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
    choices: ClassVar[Choices] = {
        "precision": ("auto", "fp32", "bf16", "fp16"),
        "device": ("auto", "cpu", "cuda"),
        "on_nan": ("skip", "stop"),
    }


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
    choices: ClassVar[Choices] = {"strategy": ("none", "ddp", "fsdp", "fairscale_fsdp")}


@dataclass
class LauncherConfig:
    """Where a job runs. ``local``: this machine (one process, or torchrun around tools/train.py).
    ``nodes`` and ``gpus_per_node`` size the job; tools/plan.py plans for them."""

    name: str = "local"
    nodes: int = 1
    gpus_per_node: int = 1
    # Processes on this machine; above 1, torchrun-style processes joined on 127.0.0.1.
    # 0: one per visible GPU up to gpus_per_node, or a single process without GPUs.
    procs: int = 0


@dataclass
class SlurmLauncherConfig:
    """A SLURM job through submitit (SEER-style): ``nodes`` x ``tasks_per_node`` processes, each
    running the same trainer; preempted or timed-out jobs checkpoint, requeue and resume."""

    name: str = "slurm"
    nodes: int = 1
    gpus_per_node: int = 8
    # Processes per node; 0: one per GPU (one per node when gpus_per_node is 0, a CPU job).
    tasks_per_node: int = 0
    cpus_per_task: int = 10
    # Memory per node in GB (0: the partition's default).
    mem_gb: int = 0
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    # Time limit in minutes.
    time: int = 4320
    job_name: str = "sslframe"
    # Further sbatch options: launcher.sbatch=[--exclusive,'--mail-type=END'] (quote those with =).
    sbatch: list[str] = field(default_factory=list)
    # Requeues after preemption or the time limit before the job gives up.
    max_requeues: int = 20
    # SLURM sends SIGUSR2 this many seconds before the time limit: time to checkpoint.
    signal_delay_s: int = 120


@dataclass
class PlanConfig:
    """Inputs of tools/plan.py that the training config does not hold."""

    # GPU memory; the default is an A100-40GB.
    gpu_memory_gb: float = 40.0
    # Dense peak of one GPU in the training precision; 312 is the A100's bf16/fp16 tensor-core
    # peak (NVIDIA A100 datasheet). Use 989 for H100 SXM bf16, 125 for V100 fp16.
    peak_tflops: float = 312.0
    # Model FLOPs utilisation assumed for the time estimate.
    mfu: float = 0.3
    # Fraction of GPU memory kept free (fragmentation, spikes).
    headroom: float = 0.1
    # CUDA context, communication buffers and allocator slack per GPU.
    overhead_gb: float = 1.5
    # Images to train on, for the wall-time estimate (0: no estimate).
    images: int = 0
    # Where the JSON report goes ("": <run.dir>/plan.json).
    out: str = ""


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
    # Embedding std and effective rank per step, averaged per logging interval; warn below these.
    collapse: bool = True
    min_std: float = 0.01
    min_effective_rank: float = 2.0


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    trunk: Any = MISSING
    head: Any = MISSING
    method: Any = MISSING
    data: Any = MISSING
    transform: Any = MISSING
    optim: Any = MISSING
    schedule: Any = MISSING
    trainer: Any = MISSING
    distributed: Any = MISSING
    launcher: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


@dataclass
class PlanRootConfig(TrainConfig):
    """tools/plan.py: a training config plus the planner's own inputs."""

    plan: PlanConfig = field(default_factory=PlanConfig)


@dataclass
class FeatureEvalConfig:
    """What every evaluation of a pretrained trunk shares (extraction settings, baseline flag)."""

    batch_size: int = 256
    num_workers: int = 2
    # Resize images to this side before the centre crop (0: the run's global crop size).
    image_size: int = 0
    # Evaluate the same architecture at random initialisation (a baseline).
    random_init: bool = False
    # Evaluate the images themselves (the normalised pixels of the run's evaluation view, flattened)
    # instead of the trunk's features: the baseline every pretrained trunk should beat.
    raw_pixels: bool = False
    device: str = "auto"
    # Features of block ``layer`` of trunk.blocks(), average-pooled (-1: the trunk's pooled output).
    layer: int = -1
    # Use features written by `tools/eval.py extract` (DIR holding train/ and val/) instead of the images.
    features: str = ""
    # checkpoint= is another project's weights file in this layout (torchvision, timm, swav, dino,
    # vissl; "": an sslframe run), for the trunk ``arch`` (resnet50, regnet_y_400mf...); images are
    # then normalised with the ImageNet mean and std at image_size (0: 224).
    layout: str = ""
    arch: str = ""
    choices: ClassVar[Choices] = {"device": ("auto", "cpu", "cuda")}


@dataclass
class KNNEvalConfig(FeatureEvalConfig):
    """Weighted kNN on frozen trunk features (Wu et al. 2018 InstDisc; Caron et al. 2021 DINO)."""

    name: str = "knn"
    ks: list[int] = field(default_factory=lambda: [20, 200])
    temperature: float = 0.07


@dataclass
class ExtractEvalConfig(FeatureEvalConfig):
    """Trunk features of data.path (train) and data.val_path (val), sharded across ranks."""

    name: str = "extract"
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    shard_size: int = 8192
    # Where the features go ("": <run dir>/eval/features).
    out_dir: str = ""


@dataclass
class LinearEvalConfig(FeatureEvalConfig):
    """Linear probe on frozen features: SGD (momentum) or LARS, cosine schedule, top-1/top-5."""

    name: str = "linear"
    epochs: int = 100
    probe_batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    # BatchNorm without affine parameters before the linear layer (MAE's linear probing).
    batch_norm: bool = False
    # Recompute features every epoch from randomly resized, flipped crops (slower than cached).
    augment: bool = False
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    seed: int = 0
    choices: ClassVar[Choices] = {"device": ("auto", "cpu", "cuda"), "optimizer": ("sgd", "lars")}


@dataclass
class LowShotEvalConfig(LinearEvalConfig):
    """Probes on class-balanced subsets: fractions of the labels and N images per class, several seeds."""

    name: str = "lowshot"
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1])
    per_class: list[int] = field(default_factory=lambda: [1, 5])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    probe: str = "linear"
    # kNN probe settings.
    k: int = 20
    temperature: float = 0.07
    choices: ClassVar[Choices] = {
        "device": ("auto", "cpu", "cuda"),
        "optimizer": ("sgd", "lars"),
        "probe": ("linear", "knn"),
    }


@dataclass
class FinetuneEvalConfig(FeatureEvalConfig):
    """Full fine-tuning with a new linear head; layer_decay < 1 turns on layer-wise LR decay."""

    name: str = "finetune"
    epochs: int = 10
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.05
    layer_decay: float = 1.0
    warmup_epochs: int = 0
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    seed: int = 0
    choices: ClassVar[Choices] = {"device": ("auto", "cpu", "cuda"), "optimizer": ("adamw", "sgd")}


@dataclass
class EvalConfig:
    checkpoint: str = MISSING
    out: str = ""
    data: Any = MISSING
    eval: Any = MISSING


# group -> option schema name -> dataclass. The option yaml files extend these.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "trunk": {"resnet": ResNetConfig, "regnet": RegNetConfig, "vit": ViTConfig, "timm": TimmTrunkConfig},
    "head": {"mlp": MLPHeadConfig},
    "method": {
        "swav": SwAVConfig,
        "simclr": SimCLRConfig,
        "mocov3": MoCoV3Config,
        "mae": MAEConfig,
        "ijepa": IJEPAConfig,
        "mocov2": MoCoV2Config,
        "byol": BYOLConfig,
        "simsiam": SimSiamConfig,
        "dino": DINOConfig,
        "barlowtwins": BarlowTwinsConfig,
        "vicreg": VICRegConfig,
        "deepclusterv2": DeepClusterV2Config,
    },
    "data": {"data": DataConfig},
    "transform": {"multicrop": MultiCropConfig},
    "optim": {"optim": OptimConfig},
    "schedule": {"schedule": ScheduleConfig},
    "trainer": {"trainer": TrainerConfig},
    "distributed": {"distributed": DistributedConfig},
    "launcher": {"local": LauncherConfig, "slurm": SlurmLauncherConfig},
    "eval": {
        "knn": KNNEvalConfig,
        "extract": ExtractEvalConfig,
        "linear": LinearEvalConfig,
        "lowshot": LowShotEvalConfig,
        "finetune": FinetuneEvalConfig,
    },
}

PRIMARY_SCHEMAS: dict[str, type] = {
    "train_schema": TrainConfig,
    "eval_schema": EvalConfig,
    "plan_schema": PlanRootConfig,
}
