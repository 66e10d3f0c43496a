"""KoLeo: the Kozachenko-Leonenko differential-entropy regulariser (Sablayrolles et al. 2019,
*Spreading vectors for similarity search*, eq. 4), which DINOv2 adds on the student's [CLS]
features (Oquab et al. 2024, sec. 4): with the features L2-normalised and ``rho_i`` the distance
from sample i to its nearest other sample,

    L = -1/n sum_i log(rho_i).

It pushes each feature away from its nearest neighbour, spreading the batch over the sphere.

Numerical safety (the peers' trackers report it reaching inf and NaN): two equal features have
distance 0, whose log is -inf and whose distance gradient is 0/0. Here the distance is taken as
``sqrt(|x_i - x_j|^2 + eps^2)``, finite with a finite gradient at 0, so duplicates give a large
but finite loss (``-log(eps)``) and zero gradient between them; a batch of one has no neighbour
and gives 0. The nearest neighbour is found without gradient (an index) and the distance to it
is recomputed with gradient, so the backward pass costs O(n d), not O(n^2 d).

With a ``group``, neighbours are searched over the global batch (features gathered with their
gradients); without one, over this rank's batch, as DINOv2 does per GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import gather_with_grad, rank
from sslframe.losses.precision import upcast


def koleo_loss(x: torch.Tensor, group: ProcessGroup | None = None, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo of ``x`` (``(n, d)``, any scale: normalised here), averaged over this rank's rows."""
    x = F.normalize(upcast(x), dim=1, eps=eps)
    everyone = gather_with_grad(x, group) if group is not None else x
    n = x.shape[0]
    if everyone.shape[0] < 2:
        return x.sum() * 0.0
    offset = rank(group) * n if group is not None else 0
    with torch.no_grad():
        similarity = x @ everyone.t()
        own = torch.arange(n, device=x.device)
        similarity[own, own + offset] = -2.0  # below any cosine: never one's own neighbour
        nearest = similarity.argmax(dim=1)
    difference = x - everyone[nearest]
    distance = torch.sqrt(difference.pow(2).sum(dim=1) + eps * eps)
    return -torch.log(distance).mean()
