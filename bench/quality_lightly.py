"""The lightly side of the quality benchmark: each method written the way lightly's examples
write it (``examples/pytorch/<method>.py`` of lightly 1.6), with lightly's own heads, losses,
transforms and utilities, on the trunk and recipe of ``configs/config/fmnist_<method>.yaml``.

What is ours here: the trunk (built from the same config and seed as sslframe's side, so both
start from the same weights), the online kNN monitor (the same code on both sides) and the
loop's bookkeeping. What is lightly's: ``lightly.models.modules`` heads, ``lightly.loss``
losses, ``lightly.transforms`` views (a per-image torchvision pipeline in the loader workers),
``lightly.models.utils`` (momentum updates, weight-decay groups, masking, patchify),
``lightly.utils.lars.LARS`` and ``lightly.utils.scheduler``. Where the examples leave a choice
open (head sizes, temperatures, momentum, optimizer, schedule) the recipe's value is used, so
the two sides differ only in the implementation. lightly is a benchmark-only dependency
(``make bench-deps``), imported only here.

Departures from the examples, each to keep the recipe (or the benchmark's budget) the same on
both sides: the trunk runs in the memory layout sslframe's trainer picks (channels-last for
ResNets on the CPU; the examples' default layout made lightly's step 4-5x slower), momentum values
follow a cosine over steps (the examples step it per epoch), and DINO's teacher head, a second
head as in the example, starts from the student head's weights (the example's starts from its own
random ones; DINO's teacher starts as a copy of the student).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from sslframe.distributed.device import pick_device
from sslframe.engine.monitors import OnlineKNN
from sslframe.models.trunks import build_trunk

log = logging.getLogger("quality")


@dataclass
class LightlyMethod:
    """A method in the examples' shape: the module to optimise, the views, and one step's loss."""

    model: nn.Module
    transform: Callable[[Any], Any]
    # (views of the batch, step, epoch, total steps) -> loss; momentum updates happen inside, before
    # the forward, as in the examples.
    loss: Callable[[list[torch.Tensor], int, int, int], torch.Tensor]
    # Called after backward, before the optimizer step (frozen prototypes, DINO's last layer).
    before_step: Callable[[int, int], None] = lambda step, epoch: None
    # Modules whose parameters the optimizer sees (default: all of ``model``).
    trained: list[nn.Module] = field(default_factory=list)
    # The trained trunk in sslframe's layout, when lightly trains another module (MAE's timm ViT).
    trunk_after: Callable[[], nn.Module] | None = None
    # Loss modules (their buffers: DINO's and iBOT's centres, MoCo's queue) moved with the model.
    losses: list[nn.Module] = field(default_factory=list)


def _normalize(cfg: DictConfig) -> dict[str, list[float]]:
    return {"mean": list(cfg.transform.mean), "std": list(cfg.transform.std)}


def _view_args(cfg: DictConfig) -> dict[str, Any]:
    """The recipe's photometric settings in lightly's transform arguments (no blur, no solarisation,
    no grayscale on Fashion-MNIST: the recipes turn them off, see configs/recipe/fmnist.yaml)."""
    tf = cfg.transform
    brightness, contrast, saturation, hue = (float(v) for v in tf.jitter)
    return {
        "cj_prob": tf.jitter_p,
        "cj_strength": tf.jitter_strength,
        "cj_bright": brightness,
        "cj_contrast": contrast,
        "cj_sat": saturation,
        "cj_hue": hue,
        "random_gray_scale": tf.grayscale_p,
        "hf_prob": tf.flip_p,
        "normalize": _normalize(cfg),
    }


def _two_views(transform: Callable[..., Any], cfg: DictConfig) -> Any:
    """A lightly two-view transform (SimCLR's, MoCo v2's, SimSiam's) with the recipe's views."""
    tf = cfg.transform
    return transform(input_size=tf.global_size, min_scale=tf.global_scale[0], gaussian_blur=0.0, **_view_args(cfg))


def _byol_views(cfg: DictConfig) -> Any:
    """lightly's BYOL transform (its two asymmetric views, as BYOL's and Barlow Twins' examples use
    it) with the recipe's views."""
    from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform

    tf = cfg.transform
    args = dict(input_size=tf.global_size, min_scale=tf.global_scale[0], gaussian_blur=0.0, solarization_prob=0.0)
    return BYOLTransform(
        view_1_transform=BYOLView1Transform(**args, **_view_args(cfg)),
        view_2_transform=BYOLView2Transform(**args, **_view_args(cfg)),
    )


def _check_recipe(cfg: DictConfig) -> None:
    tf = cfg.transform
    if any(p > 0 for p in tf.blur_p) or tf.local_blur_p > 0 or any(p > 0 for p in tf.solarize_p):
        # lightly's blur is PIL's (no kernel cap) and ours a 10%-of-the-crop kernel: on 28 px crops
        # they are different operations, so the shared recipes leave blur out.
        raise ValueError("the Fashion-MNIST recipes compare views without blur and solarisation")


def _features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return backbone(x).flatten(start_dim=1)


def simclr(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    from lightly.loss import NTXentLoss
    from lightly.models.modules.heads import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    head = cfg.head
    projection = SimCLRProjectionHead(trunk.out_dim, head.hidden_dims[0], head.output_dim, len(head.hidden_dims) + 1)
    model = nn.ModuleDict({"backbone": trunk, "projection_head": projection})
    criterion = NTXentLoss(temperature=cfg.method.temperature)
    transform = _two_views(SimCLRTransform, cfg)

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        z0 = projection(_features(trunk, views[0]))
        z1 = projection(_features(trunk, views[1]))
        return criterion(z0, z1)

    return LightlyMethod(model, transform, loss, losses=[criterion])


def _momentum_pair(module: nn.Module) -> nn.Module:
    from lightly.models.utils import deactivate_requires_grad

    copied = copy.deepcopy(module)
    deactivate_requires_grad(copied)
    return copied


def _moco_head(in_dim: int, head: DictConfig) -> nn.Module:
    """lightly's MoCo projection head with the recipe's layers: ``MoCoProjectionHead`` as the MoCo v2
    example builds it (hidden layers of one width, no batch norm), otherwise the same layers as ours
    in lightly's ``ProjectionHead`` blocks (one linear layer for the MoCo authors' CIFAR-10 demo;
    batch norm after hidden layers, and the output batch norm with the learned parameters ours
    has, ``head.last_batch_norm_params``)."""
    from lightly.models.modules.heads import MoCoProjectionHead, ProjectionHead

    from sslframe.models.heads import output_batch_norm

    hidden = list(head.hidden_dims)
    if hidden and len(set(hidden)) == 1 and not head.batch_norm and not head.last_batch_norm:
        return MoCoProjectionHead(in_dim, hidden[0], head.output_dim, len(hidden) + 1, batch_norm=False)
    if head.activation != "relu":
        raise ValueError(f"lightly's MoCo side builds ReLU heads (head.activation={head.activation})")
    blocks: list[tuple[int, int, nn.Module | None, nn.Module | None]] = []
    for width in hidden:
        blocks.append((in_dim, width, nn.BatchNorm1d(width) if head.batch_norm else None, nn.ReLU()))
        in_dim = width
    last = output_batch_norm(head.output_dim, head.last_batch_norm_params) if head.last_batch_norm else None
    return ProjectionHead([*blocks, (in_dim, head.output_dim, last, None)])


def mocov2(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    from lightly.loss import NTXentLoss
    from lightly.models.utils import update_momentum
    from lightly.transforms import MoCoV2Transform

    head = cfg.head
    projection = _moco_head(trunk.out_dim, head)
    trunk_m, projection_m = _momentum_pair(trunk), _momentum_pair(projection)
    model = nn.ModuleDict({"backbone": trunk, "projection_head": projection, "bm": trunk_m, "pm": projection_m})
    criterion = NTXentLoss(
        temperature=cfg.method.temperature, memory_bank_size=(cfg.method.queue_length, head.output_dim)
    )
    transform = _two_views(MoCoV2Transform, cfg)

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        update_momentum(trunk, trunk_m, m=cfg.method.momentum)
        update_momentum(projection, projection_m, m=cfg.method.momentum)
        query = projection(_features(trunk, views[0]))
        key = projection_m(_features(trunk_m, views[1])).detach()
        return criterion(query, key)

    return LightlyMethod(model, transform, loss, trained=[trunk, projection], losses=[criterion])


def byol(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import update_momentum
    from lightly.utils.scheduler import cosine_schedule

    head = cfg.head
    projection = BYOLProjectionHead(trunk.out_dim, head.hidden_dims[0], head.output_dim)
    prediction = BYOLPredictionHead(head.output_dim, cfg.method.predictor_hidden_dims[0], head.output_dim)
    trunk_m, projection_m = _momentum_pair(trunk), _momentum_pair(projection)
    model = nn.ModuleDict({"backbone": trunk, "projection_head": projection, "prediction_head": prediction})
    model.update({"bm": trunk_m, "pm": projection_m})
    criterion = NegativeCosineSimilarity()
    transform = _byol_views(cfg)

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        m = cosine_schedule(step, total, cfg.method.base_momentum, 1.0)
        update_momentum(trunk, trunk_m, m=m)
        update_momentum(projection, projection_m, m=m)
        p0 = prediction(projection(_features(trunk, views[0])))
        p1 = prediction(projection(_features(trunk, views[1])))
        with torch.no_grad():
            z0 = projection_m(_features(trunk_m, views[0]))
            z1 = projection_m(_features(trunk_m, views[1]))
        return 0.5 * (criterion(p0, z1) + criterion(p1, z0))

    return LightlyMethod(model, transform, loss, trained=[trunk, projection, prediction], losses=[criterion])


def simsiam(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead
    from lightly.transforms import SimSiamTransform

    if cfg.method.fix_predictor_lr:
        raise ValueError("lightly's SimSiam example has one schedule for all weights (method.fix_predictor_lr=false)")
    head = cfg.head
    projection = SimSiamProjectionHead(trunk.out_dim, head.hidden_dims[0], head.output_dim)
    prediction = SimSiamPredictionHead(head.output_dim, cfg.method.predictor_hidden_dims[0], head.output_dim)
    model = nn.ModuleDict({"backbone": trunk, "projection_head": projection, "prediction_head": prediction})
    criterion = NegativeCosineSimilarity()
    transform = _two_views(SimSiamTransform, cfg)

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        z0 = projection(_features(trunk, views[0]))
        z1 = projection(_features(trunk, views[1]))
        p0, p1 = prediction(z0), prediction(z1)
        return 0.5 * (criterion(z0.detach(), p1) + criterion(z1.detach(), p0))

    return LightlyMethod(model, transform, loss, losses=[criterion])


def barlowtwins(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    from lightly.loss import BarlowTwinsLoss
    from lightly.models.modules.heads import BarlowTwinsProjectionHead

    head = cfg.head
    projection = BarlowTwinsProjectionHead(trunk.out_dim, head.hidden_dims[0], head.output_dim)
    model = nn.ModuleDict({"backbone": trunk, "projection_head": projection})
    criterion = BarlowTwinsLoss(lambda_param=cfg.method.lambda_offdiag)
    transform = _byol_views(cfg)

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        return criterion(projection(_features(trunk, views[0])), projection(_features(trunk, views[1])))

    return LightlyMethod(model, transform, loss, losses=[criterion])


def vicreg(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    from lightly.loss import VICRegLoss
    from lightly.models.modules.heads import VICRegProjectionHead
    from lightly.transforms.vicreg_transform import VICRegTransform

    head, m = cfg.head, cfg.method
    projection = VICRegProjectionHead(trunk.out_dim, head.hidden_dims[0], head.output_dim, len(head.hidden_dims) + 1)
    model = nn.ModuleDict({"backbone": trunk, "projection_head": projection})
    criterion = VICRegLoss(lambda_param=m.sim_coeff, mu_param=m.std_coeff, nu_param=m.cov_coeff, eps=m.eps)
    tf = cfg.transform
    transform = VICRegTransform(
        input_size=tf.global_size, min_scale=tf.global_scale[0], gaussian_blur=0.0, solarize_prob=0.0, **_view_args(cfg)
    )

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        return criterion(projection(_features(trunk, views[0])), projection(_features(trunk, views[1])))

    return LightlyMethod(model, transform, loss, losses=[criterion])


def _multicrop_transform(cfg: DictConfig) -> Any:
    from lightly.transforms.swav_transform import SwaVTransform

    tf = cfg.transform
    return SwaVTransform(
        crop_sizes=(tf.global_size, tf.local_size),
        crop_counts=(tf.global_crops, tf.local_crops),
        crop_min_scales=(tf.global_scale[0], tf.local_scale[0]),
        crop_max_scales=(tf.global_scale[1], tf.local_scale[1]),
        gaussian_blur=0.0,
        **_view_args(cfg),
    )


def swav(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    from lightly.loss import SwaVLoss
    from lightly.models.modules.heads import SwaVProjectionHead, SwaVPrototypes

    head, m = cfg.head, cfg.method
    if m.queue_length > 0 or len(m.num_prototypes) != 1:
        raise ValueError("the lightly SwAV side is written for one prototype set and no queue")
    projection = SwaVProjectionHead(trunk.out_dim, head.hidden_dims[0], head.output_dim)
    prototypes = SwaVPrototypes(
        head.output_dim, m.num_prototypes[0], n_steps_frozen_prototypes=m.freeze_prototypes_steps
    )
    model = nn.ModuleDict({"backbone": trunk, "projection_head": projection, "prototypes": prototypes})
    criterion = SwaVLoss(
        temperature=m.temperature, sinkhorn_iterations=m.sinkhorn_iterations, sinkhorn_epsilon=m.epsilon
    )
    globals_ = cfg.transform.global_crops

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        prototypes.normalize()
        outputs = []
        for view in views:
            z = nn.functional.normalize(projection(_features(trunk, view)), dim=1, p=2)
            outputs.append(prototypes(z, step))
        return criterion(outputs[:globals_], outputs[globals_:])

    return LightlyMethod(model, _multicrop_transform(cfg), loss, losses=[criterion])


def _dino_loss(m: DictConfig) -> nn.Module:
    """lightly's DINOLoss with the recipe's temperatures and centre momentum."""
    from lightly.loss import DINOLoss

    return DINOLoss(
        output_dim=m.out_dim,
        warmup_teacher_temp=m.warmup_teacher_temperature,
        teacher_temp=m.teacher_temperature,
        warmup_teacher_temp_epochs=m.warmup_teacher_temperature_epochs,
        student_temp=m.student_temperature,
        center_momentum=m.center_momentum,
    )


# DINOViewTransform's own default jitter strength, which lightly's DINOTransform (1.6) gives its
# second global view whatever ``cj_strength`` it is passed (the argument is not forwarded there).
_DINO_VIEW_STRENGTH = 0.5


def _dino_views(cfg: DictConfig) -> Any:
    """lightly's DINOTransform (2 global crops, the recipe's local ones) with the recipe's views.

    The jitter amounts go in at DINOViewTransform's default strength, scaled so that strength x
    amount is the recipe's: DINOTransform does not pass ``cj_strength`` on to its second global
    view, which would otherwise be jittered at that default instead of the recipe's strength
    (``tests/bench/test_quality.py::test_ours_and_lightlys_views_have_one_distribution``)."""
    from lightly.transforms.dino_transform import DINOTransform

    tf = cfg.transform
    args = _view_args(cfg)
    scale = args.pop("cj_strength") / _DINO_VIEW_STRENGTH
    for key in ("cj_bright", "cj_contrast", "cj_sat", "cj_hue"):
        args[key] *= scale
    return DINOTransform(
        global_crop_size=tf.global_size,
        global_crop_scale=tuple(tf.global_scale),
        local_crop_size=tf.local_size,
        local_crop_scale=tuple(tf.local_scale),
        n_local_views=tf.local_crops,
        gaussian_blur=(0.0, 0.0, 0.0),
        solarization_prob=0.0,
        cj_strength=_DINO_VIEW_STRENGTH,
        **args,
    )


def dino(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    from lightly.models.modules.heads import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    head, m = cfg.head, cfg.method
    if len(head.hidden_dims) != 2:
        raise ValueError("lightly's DINO head has two hidden layers (head.hidden_dims=[H, H])")

    def dino_head(freeze: int) -> nn.Module:
        args = (trunk.out_dim, head.hidden_dims[0], head.output_dim, m.out_dim)
        return DINOProjectionHead(
            *args, batch_norm=head.batch_norm, freeze_last_layer=freeze, norm_last_layer=m.norm_last_layer
        )

    student = dino_head(m.freeze_last_layer_epochs)
    # As the example, a second head for the teacher (weight norm cannot be deep-copied), given the
    # student's weights so that both start alike, as in DINO.
    head_t = dino_head(-1)
    head_t.load_state_dict(student.state_dict())
    deactivate_requires_grad(head_t)
    trunk_t = _momentum_pair(trunk)
    model = nn.ModuleDict({"student_backbone": trunk, "student_head": student, "tb": trunk_t, "th": head_t})
    criterion = _dino_loss(m)
    transform = _dino_views(cfg)

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        momentum = cosine_schedule(step, total, m.base_momentum, 1.0)
        update_momentum(trunk, trunk_t, m=momentum)
        update_momentum(student, head_t, m=momentum)
        with torch.no_grad():
            teacher_out = [head_t(_features(trunk_t, v)) for v in views[:2]]
        student_out = [student(_features(trunk, v)) for v in views]
        return criterion(teacher_out, student_out, epoch=epoch)

    def before_step(step: int, epoch: int) -> None:
        student.cancel_last_layer_gradients(current_epoch=epoch)

    return LightlyMethod(model, transform, loss, before_step, trained=[trunk, student], losses=[criterion])


def _layer_scale_init(trunk: nn.Module) -> float | None:
    """timm's ``init_values`` for our trunk: None without LayerScale (its value is then loaded
    with the weights, so any non-zero number builds the same modules)."""
    return 1.0 if any(hasattr(block.ls1, "gamma") for block in trunk.blocks()) else None


def timm_vit(trunk: nn.Module, dynamic_img_size: bool = False) -> nn.Module:
    """timm's VisionTransformer with our ViT trunk's shape and weights (sslframe.eval.interchange
    maps the names; fixed sine-cosine positions go in ``pos_embed``, kept frozen as ours are), so
    lightly's MAE starts from the same network as sslframe's. ``dynamic_img_size``: positions
    interpolated per input size (crops of several sizes)."""
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from sslframe.eval.interchange import export_trunk

    vit = TimmViT(
        img_size=trunk.grid * trunk.patch_size,
        patch_size=trunk.patch_size,
        embed_dim=trunk.embed_dim,
        depth=len(trunk.blocks()),
        num_heads=trunk.num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        class_token=trunk.cls_token is not None,
        no_embed_class=True,
        global_pool="avg" if trunk.pool == "mean" else "token",
        fc_norm=False,
        num_classes=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        reg_tokens=0 if trunk.reg_token is None else trunk.reg_token.shape[1],
        init_values=_layer_scale_init(trunk),
        dynamic_img_size=dynamic_img_size,
    )
    missing, unexpected = vit.load_state_dict(export_trunk(trunk, "timm"), strict=False)
    if missing or unexpected:
        raise ValueError(f"timm ViT does not take our trunk's weights: missing {missing}, unexpected {unexpected}")
    vit.pos_embed.requires_grad_(trunk.pos_embed is not None)
    return vit


def mae(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    """lightly's MAE example (``examples/pytorch/mae.py``): MaskedVisionTransformerTIMM around a
    timm ViT, MAEDecoderTIMM, ``utils.random_token_mask``, MSE on the masked patches (their
    pixels normalised per patch with ``utils.normalize_mean_var`` when the recipe asks for it)."""
    from lightly.models import utils
    from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM
    from lightly.transforms import MAETransform

    m, tf = cfg.method, cfg.transform
    vit = timm_vit(trunk)
    backbone = MaskedVisionTransformerTIMM(vit=vit, weight_initialization="skip", pos_embed_initialization="skip")
    decoder = MAEDecoderTIMM(
        num_patches=vit.patch_embed.num_patches,
        patch_size=trunk.patch_size,
        embed_dim=vit.embed_dim,
        decoder_embed_dim=m.decoder_dim,
        decoder_depth=m.decoder_depth,
        decoder_num_heads=m.decoder_heads,
        mlp_ratio=4.0,
        proj_drop_rate=0.0,
        attn_drop_rate=0.0,
    )
    model = nn.ModuleDict({"backbone": backbone, "decoder": decoder})
    transform = MAETransform(input_size=tf.global_size, min_scale=tf.global_scale[0], normalize=_normalize(cfg))
    sequence = backbone.sequence_length

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        images = views[0]
        batch = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(batch, sequence), mask_ratio=m.mask_ratio, device=images.device
        )
        encoded = backbone.encode(images=images, idx_keep=idx_keep)
        decoded = decoder.embed(encoded)
        masked = utils.repeat_token(decoder.mask_token, (batch, sequence))
        masked = utils.set_at_index(masked, idx_keep, decoded.type_as(masked))
        pred = decoder.predict(utils.get_at_index(decoder.decode(masked), idx_mask))
        target = utils.get_at_index(utils.patchify(images, trunk.patch_size), idx_mask - 1)
        if m.norm_pix_loss:
            target = utils.normalize_mean_var(target, dim=-1)
        return nn.functional.mse_loss(pred, target)

    def trained_trunk() -> nn.Module:
        from sslframe.eval.interchange import import_state

        state, report = import_state(trunk, vit.state_dict(), "timm")
        if report.missing or report.unexpected:
            raise ValueError(f"the trained timm ViT does not map back: {report.summary()}")
        trunk.load_state_dict(state)
        return trunk

    return LightlyMethod(model, transform, loss, trunk_after=trained_trunk)


def _masked_distillation(trunk: nn.Module, cfg: DictConfig, untied: bool) -> LightlyMethod:
    """lightly's iBOT and DINOv2 examples (``examples/pytorch/ibot.py``, ``dinov2.py``), which
    differ in their heads: MaskedVisionTransformerTIMM student and EMA teacher around timm ViTs
    (stochastic depth in the student only, through ``update_drop_path_rate``), ``random_block_mask``,
    ``DINOLoss`` + ``IBOTPatchLoss`` (+ ``KoLeoLoss`` on the student's global [CLS] tokens, with the
    recipe's weight), momentum and weight decay on cosine schedules. iBOT: one
    ``DINOProjectionHead`` for [CLS] and patch tokens, its last layer's gradients cancelled in the
    first epochs (``cancel_last_layer_gradients``). DINOv2: ``DINOv2ProjectionHead`` for each,
    untied; the example zeroes their last layer's learning rate in the first epoch through a
    parameter-group key its optimizer never has (so nothing is frozen), here their gradients are
    dropped for ``freeze_last_layer_epochs``, as the recipe says. The teacher's heads start from
    the student's weights (the examples build them apart, randomly)."""
    from lightly.loss import IBOTPatchLoss, KoLeoLoss
    from lightly.models.modules import DINOProjectionHead, DINOv2ProjectionHead, MaskedVisionTransformerTIMM
    from lightly.models.utils import deactivate_requires_grad, random_block_mask, update_drop_path_rate, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    head, m, tf = cfg.head, cfg.method, cfg.transform
    if len(head.hidden_dims) != 2 or head.hidden_dims[0] != head.hidden_dims[1]:
        raise ValueError("lightly's DINO heads have two hidden layers of one width (head.hidden_dims=[H, H])")
    if m.centering != "center" or m.separate_patch_head != untied or (untied and m.norm_last_layer):
        raise ValueError(
            "lightly's examples centre (method.centering=center); iBOT's with one shared head, DINOv2's with "
            "untied heads that learn their norm (method.norm_last_layer=false)"
        )
    vit = timm_vit(trunk, dynamic_img_size=True)
    mask_token = nn.Parameter(trunk.mask_token.detach().clone())
    student = MaskedVisionTransformerTIMM(
        vit=vit, mask_token=mask_token, weight_initialization="skip", antialias=False, pos_embed_initialization="skip"
    )
    teacher = copy.deepcopy(student)  # before stochastic depth goes into the student
    deactivate_requires_grad(teacher)
    if cfg.trunk.drop_path_rate > 0:
        mode = "uniform" if cfg.trunk.drop_path_uniform else "linear"
        update_drop_path_rate(student.vit, drop_path_rate=cfg.trunk.drop_path_rate, mode=mode)

    def make_head(out_dim: int, freeze: int) -> nn.Module:
        sizes = {"input_dim": trunk.out_dim, "hidden_dim": head.hidden_dims[0], "bottleneck_dim": head.output_dim}
        if untied:
            return DINOv2ProjectionHead(**sizes, output_dim=out_dim, batch_norm=head.batch_norm)
        return DINOProjectionHead(
            **sizes,
            output_dim=out_dim,
            batch_norm=head.batch_norm,
            freeze_last_layer=freeze,
            norm_last_layer=m.norm_last_layer,
        )

    heads = {"cls": make_head(m.out_dim, m.freeze_last_layer_epochs)}
    heads["patch"] = make_head(m.patch_out_dim, m.freeze_last_layer_epochs) if untied else heads["cls"]
    teacher_heads = {"cls": make_head(m.out_dim, -1)}
    teacher_heads["patch"] = make_head(m.patch_out_dim, -1) if untied else teacher_heads["cls"]
    for name, h in teacher_heads.items():
        h.load_state_dict(heads[name].state_dict())
        deactivate_requires_grad(h)
    model = nn.ModuleDict(
        {"student": student, "teacher": teacher, **{f"s_{k}": v for k, v in heads.items()}}
        | {f"t_{k}": v for k, v in teacher_heads.items()}
    )
    dino_criterion = _dino_loss(m)
    ibot_criterion = IBOTPatchLoss(
        output_dim=m.patch_out_dim,
        teacher_temp=m.teacher_patch_temperature,
        student_temp=m.student_temperature,
        center_momentum=m.center_momentum,
    )
    koleo_criterion = KoLeoLoss()
    patch_temps = torch.linspace(
        m.warmup_teacher_patch_temperature, m.teacher_patch_temperature, max(m.warmup_teacher_temperature_epochs, 1)
    )
    transform = _dino_views(cfg)
    prefix = vit.num_prefix_tokens
    grid = tf.global_size // trunk.patch_size

    def loss(views: list[torch.Tensor], step: int, epoch: int, total: int) -> torch.Tensor:
        momentum = cosine_schedule(step, total, m.base_momentum, 1.0)
        update_momentum(student, teacher, m=momentum)
        for name in ("cls", "patch") if untied else ("cls",):
            update_momentum(heads[name], teacher_heads[name], m=momentum)
        global_views = torch.cat(views[:2])
        batch = len(global_views)
        block_mask = random_block_mask(
            size=(batch, grid, grid),
            batch_mask_ratio=m.mask_probability,
            min_image_mask_ratio=m.mask_ratio[0],
            max_image_mask_ratio=m.mask_ratio[1],
            device=global_views.device,
        )
        mask = global_views.new_zeros((batch, prefix + grid * grid), dtype=torch.bool)
        mask[:, prefix:] = block_mask.flatten(start_dim=1)
        with torch.no_grad():
            features = teacher.encode(global_views)
            teacher_cls = teacher_heads["cls"](features[:, 0])
            teacher_patch = teacher_heads["patch"](features[mask])
        features = student.encode(global_views, mask=mask)
        student_global_cls = features[:, 0]
        student_cls = [heads["cls"](student_global_cls)]
        if len(views) > 2:
            student_cls.append(heads["cls"](student.encode(torch.cat(views[2:]))[:, 0]))
        student_patch = heads["patch"](features[mask])
        student_out = list(torch.cat(student_cls).chunk(len(views)))
        dino_loss = dino_criterion(teacher_out=list(teacher_cls.chunk(2)), student_out=student_out, epoch=epoch)
        patch_temp = float(patch_temps[epoch]) if epoch < m.warmup_teacher_temperature_epochs else None
        ibot_loss = ibot_criterion(
            teacher_out=teacher_patch, student_out=student_patch, mask=block_mask, teacher_temp=patch_temp
        )
        koleo_loss = sum(koleo_criterion(t) for t in student_global_cls.chunk(2))
        return dino_loss + m.patch_loss_weight * ibot_loss + m.koleo_weight * koleo_loss

    def before_step(step: int, epoch: int) -> None:
        if not untied:
            heads["cls"].cancel_last_layer_gradients(current_epoch=epoch)
        elif epoch < m.freeze_last_layer_epochs:
            for h in heads.values():
                for p in h.last_layer.parameters():
                    p.grad = None

    def trained_trunk() -> nn.Module:
        from sslframe.eval.interchange import import_state

        state, report = import_state(trunk, student.vit.state_dict(), "timm")
        if report.unexpected or set(report.missing) - {"mask_token"}:
            raise ValueError(f"the trained timm ViT does not map back: {report.summary()}")
        state["mask_token"] = student.mask_token.detach()
        trunk.load_state_dict(state)
        return trunk

    trained = [student, heads["cls"], heads["patch"]] if untied else [student, heads["cls"]]
    losses = [dino_criterion, ibot_criterion, koleo_criterion]
    return LightlyMethod(model, transform, loss, before_step, trained=trained, trunk_after=trained_trunk, losses=losses)


def ibot(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    return _masked_distillation(trunk, cfg, untied=False)


def dinov2(trunk: nn.Module, cfg: DictConfig) -> LightlyMethod:
    return _masked_distillation(trunk, cfg, untied=True)


LIGHTLY: dict[str, Callable[[nn.Module, DictConfig], LightlyMethod]] = {
    "simclr": simclr,
    "mocov2": mocov2,
    "swav": swav,
    "dino": dino,
    "byol": byol,
    "simsiam": simsiam,
    "barlowtwins": barlowtwins,
    "vicreg": vicreg,
    "mae": mae,
    "ibot": ibot,
    "dinov2": dinov2,
}


# Recipe settings that a lightly side takes from lightly's example rather than from the recipe:
# its named heads fix their layers' batch norm and activation, and SimCLR's example runs one view
# at a time. A variant (bench/quality_variants.py) that overrides one of them would change ours
# only, so such a variant is refused for the lightly side (``refuse_fixed_overrides``).
_HEAD_LAYOUT = ("head.batch_norm", "head.last_batch_norm", "head.last_batch_norm_params", "head.activation")
FIXED_BY_EXAMPLE: dict[str, tuple[str, ...]] = {
    "simclr": ("method.view_batches", *_HEAD_LAYOUT),
    "byol": _HEAD_LAYOUT,
    "simsiam": _HEAD_LAYOUT,
    "barlowtwins": _HEAD_LAYOUT,
    "vicreg": _HEAD_LAYOUT,
    "swav": _HEAD_LAYOUT,
    # DINOProjectionHead takes the hidden layers' batch norm; no output batch norm, GELU throughout.
    "dino": ("head.last_batch_norm", "head.last_batch_norm_params", "head.activation"),
}


def refuse_fixed_overrides(method: str, overrides: Sequence[str]) -> None:
    """Raise before any work when ``overrides`` set a key the lightly side of ``method`` does not
    read (``FIXED_BY_EXAMPLE``), naming the keys."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    fixed = sorted(keys & set(FIXED_BY_EXAMPLE.get(method, ())))
    if fixed:
        raise ValueError(
            f"lightly's {method} side keeps its example's {', '.join(fixed)} whatever the recipe says, so a "
            "variant that overrides it would change ours only: run that variant with --sides ours"
        )


# ------------------------------------------------------------------------------- the loop
def _optimizer(modules: list[nn.Module], cfg: DictConfig, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer with lightly's weight-decay split (``get_weight_decay_parameters``:
    biases and norm parameters without weight decay, which lightly's LARS also leaves unscaled)."""
    from lightly.models.utils import get_weight_decay_parameters
    from lightly.utils.lars import LARS

    opt = cfg.optim
    if opt.bias_lr_factor != 1.0 or opt.layer_decay != 1.0 or opt.patch_embed_lr_factor != 1.0:
        raise ValueError(
            "the lightly side has no per-group learning-rate factors "
            "(optim.bias_lr_factor, optim.layer_decay, optim.patch_embed_lr_factor)"
        )
    if opt.exclude_bias_and_norm:
        decay, no_decay = get_weight_decay_parameters(modules)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": [p for module in modules for p in module.parameters() if p.requires_grad]}]
    if opt.name == "lars":
        return LARS(
            groups, lr=lr, momentum=opt.momentum, weight_decay=opt.weight_decay, trust_coefficient=opt.trust_coefficient
        )
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=opt.nesterov
        )
    if opt.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay)
    raise ValueError(f"no lightly-side optimizer for optim.name={opt.name}")


def train_lightly(method: str, cfg: DictConfig) -> tuple[nn.Module, int, float]:
    """Pretrain with the lightly implementation of ``method`` on ``cfg``'s recipe; returns the
    trunk, the steps run and the mean loss of the last 20 steps."""
    from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    _check_recipe(cfg)
    device = pick_device(cfg.trainer.device)
    torch.manual_seed(cfg.trainer.seed)
    trunk = build_trunk(cfg.trunk)  # built first from the seed, as sslframe's Trainer builds it
    spec = LIGHTLY[method](trunk, cfg)
    # The trunk too: where lightly trains a timm copy (MAE, iBOT, DINOv2), ``trunk_after`` maps the
    # copy's weights back into it, for the monitor and the evaluation.
    for module in [trunk, spec.model, *spec.losses]:
        module.to(device)
    data = cfg.data
    dataset = ImageFolder(data.path, transform=spec.transform)
    loader = DataLoader(
        dataset,
        batch_size=data.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=data.num_workers,
        persistent_workers=data.num_workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.trainer.seed),
    )
    steps_per_epoch = len(loader)
    total = cfg.trainer.max_epochs * steps_per_epoch
    stop = min(total, cfg.trainer.max_steps) if cfg.trainer.max_steps > 0 else total
    lr = cfg.optim.lr * data.batch_size / cfg.optim.base_batch_size if cfg.optim.base_batch_size else cfg.optim.lr
    optimizer = _optimizer(spec.trained or [spec.model], cfg, lr)
    sched = cfg.schedule
    warmup = min(sched.warmup_steps or round(sched.warmup_epochs * steps_per_epoch), total)
    end = sched.final_factor if sched.name == "cosine" else 1.0
    scheduler = CosineWarmupScheduler(
        optimizer, warmup, total, start_value=1.0, end_value=end, warmup_start_value=sched.warmup_start_factor
    )
    # The trunk's memory layout as sslframe's Trainer picks it (channels-last for ResNets on the CPU):
    # lightly's examples leave PyTorch's default, with which every convolution reorders its input
    # and the step ran 4-5x slower on the benchmark's CPU (oneDNN reorders, measured with py-spy).
    # Weight decay on a cosine to schedule.final_weight_decay, set on the groups that decay, as
    # lightly's DINOv2 example does it.
    final_wd = sched.get("final_weight_decay")
    layout = torch.channels_last if cfg.trainer.channels_last and device.type in trunk.channels_last_devices else None
    if layout is not None:
        spec.model.to(memory_format=layout)
    knn = OnlineKNN(trunk, cfg, device, layout or torch.contiguous_format) if cfg.monitor.knn_every > 0 else None
    spec.model.train()
    step, recent, start = 0, [], time.perf_counter()
    for epoch in range(math.ceil(stop / steps_per_epoch)):
        for views, _ in loader:
            views = [v.to(device, non_blocking=True) for v in views]
            if layout is not None:
                views = [v.contiguous(memory_format=layout) for v in views]
            loss = spec.loss(views, step, epoch, total)
            loss.backward()
            spec.before_step(step, epoch)
            if final_wd is not None:
                decay = cosine_schedule(step, total, cfg.optim.weight_decay, final_wd)
                for group in optimizer.param_groups:
                    if group["weight_decay"] != 0.0:
                        group["weight_decay"] = decay
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            step += 1
            recent = [*recent[-19:], float(loss.detach())]
            if knn is not None and step % cfg.monitor.knn_every == 0:
                if spec.trunk_after is not None:
                    spec.trunk_after()  # the monitor watches ``trunk``: give it the trained weights
                knn.evaluate()
            if step % cfg.trainer.log_every == 0:
                rate = step * data.batch_size / (time.perf_counter() - start)
                log.info("lightly %s step %d/%d loss %.4f, %.0f images/s so far", method, step, stop, recent[-1], rate)
            if step >= stop:
                break
    if spec.trunk_after is not None:
        trunk = spec.trunk_after()
    return trunk, step, sum(recent) / max(len(recent), 1)
