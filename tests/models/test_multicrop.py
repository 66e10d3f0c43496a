from __future__ import annotations

import torch

from sslframe.models.multicrop import group_by_resolution, multicrop_forward


def test_crops_of_equal_size_share_one_call() -> None:
    crops = [torch.randn(4, 3, 16, 16)] * 2 + [torch.randn(4, 3, 8, 8)] * 3
    calls = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.mean((1, 2, 3))[:, None]

    out = multicrop_forward(fn, crops)
    assert group_by_resolution(crops) == [[0, 1], [2, 3, 4]]
    assert calls == [8, 12]
    torch.testing.assert_close(out, torch.cat([c.mean((1, 2, 3))[:, None] for c in crops]))
