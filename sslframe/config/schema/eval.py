"""The ``eval`` group: one schema per evaluation task of tools/eval.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sslframe.registry import Choices

# The values of eval.encoder (sslframe/distributed/export.py trunk_weights reads them).
ENCODERS = ("student", "teacher")


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
    # Whose weights: "student", the trunk trained by the gradient (every method has one), or
    # "teacher", the method's momentum (EMA) copy of it (BYOL, MoCo, DINO, iBOT, DINOv2, I-JEPA).
    # DINO's, iBOT's and DINOv2's authors evaluate the teacher (the --checkpoint_key default of
    # DINO's eval_knn.py and eval_linear.py), as do I-JEPA's (the target encoder); BYOL's and MoCo's
    # the online/query encoder. The default is the student for every method alike, as the quality
    # benchmark (bench/quality.py) measures ours and lightly's side; eval.encoder=teacher follows
    # those authors.
    encoder: str = "student"
    # Re-estimate the trunk's batch-norm running statistics on the first N images of data.path
    # (the evaluation view) before computing features: precise BN (Wu & Johnson 2021). 0 keeps the
    # checkpoint's statistics (those of training's augmented views; at random init mean 0 and
    # variance 1, which pass activations through unnormalised). Not for fine-tuning.
    precise_bn_images: int = 0
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
    choices: ClassVar[Choices] = {"device": ("auto", "cpu", "cuda"), "encoder": ENCODERS}


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
    # Where the features go ("": <run dir>/eval/features; features_teacher, features_random_init or
    # features_raw_pixels for those sources, so no extraction overwrites another's).
    out_dir: str = ""
    # Replace an earlier extraction in out_dir (its shards, index and the knn/linear/lowshot results
    # stored beside it); without it, extracting into a folder that holds features is refused.
    overwrite: bool = False


@dataclass
class EmbedEvalConfig(FeatureEvalConfig):
    """Features of every image of data.path for curation (tools/curate.py embed): resumable after
    a kill, across ranks, with each image's content hash (sslframe/curate/embed.py)."""

    name: str = "embed"
    # Samples per piece of a folder or file list (a tar shard is its own piece); the unit of
    # resumption: a killed job redoes at most one piece per rank.
    piece_size: int = 4096
    # Where the features go (required: the curation steps read them from there).
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
    choices: ClassVar[Choices] = {
        "device": ("auto", "cpu", "cuda"),
        "encoder": ENCODERS,
        "optimizer": ("sgd", "lars"),
    }


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
        "encoder": ENCODERS,
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
    choices: ClassVar[Choices] = {"device": ("auto", "cpu", "cuda"), "encoder": ENCODERS, "optimizer": ("adamw", "sgd")}
