"""Pure loss functions with explicit global-batch semantics (optional process group)."""

from sslframe.losses.ntxent import nt_xent_loss
from sslframe.losses.sinkhorn import sinkhorn_knopp
from sslframe.losses.swav import swapped_prediction_loss

__all__ = ["nt_xent_loss", "sinkhorn_knopp", "swapped_prediction_loss"]
