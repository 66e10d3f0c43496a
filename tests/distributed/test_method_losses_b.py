"""DINO's loss and centre, and MoCo v2's shuffle-BN and queue, with two real gloo processes.

One pair of processes computes both (starting processes is the expensive part); each test
checks its half against a computation on one process written here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.distributed as dist

from sslframe.losses.dino import dino_loss, updated_center
from sslframe.methods import StepContext
from sslframe.methods.mocov2 import MoCoV2, MoCoV2Config, shuffle_order
from sslframe.models.heads import MLPHeadConfig
from tests.distributed.harness import run_distributed
from tests.methods.generated_views import one_thread, tiny_method

N, K, CROPS, WORLD = 8, 6, 4, 2
# float64 for DINO: only the summation order differs, far below these tolerances.
RTOL, ATOL = 1e-9, 1e-12
MOCO_STEP, QUEUE, START = 5, 12, 8


def dino_inputs(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Student scores of CROPS crops and teacher scores of the 2 global crops, crop-major."""
    g = torch.Generator().manual_seed(10 + step)
    return torch.randn(CROPS * N, K, generator=g, dtype=torch.float64), torch.randn(
        2 * N, K, generator=g, dtype=torch.float64
    )


def local_rows(rank: int, crops: int) -> list[int]:
    b = N // WORLD
    return [c * N + rank * b + i for c in range(crops) for i in range(b)]


def dino_two_steps(rank: int, group: dist.ProcessGroup | None) -> dict[str, Any]:
    """Two steps: loss and gradients with the current centre, then the centre update."""
    center = torch.zeros(1, K, dtype=torch.float64)
    out: dict[str, Any] = {}
    for step in range(2):
        student, teacher = dino_inputs(step)
        if group is not None:
            student, teacher = student[local_rows(rank, CROPS)], teacher[local_rows(rank, 2)]
        student = student.clone().requires_grad_()
        loss = dino_loss(student, teacher, center, 0.1, 0.04, teacher_crops=2)
        loss.backward()
        center = updated_center(center, teacher, 0.9, group)
        out[f"loss{step}"], out[f"grad{step}"], out[f"center{step}"] = loss.detach(), student.grad, center
    return out


def moco_images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, 3, 16, 16, generator=g), torch.randn(N, 3, 16, 16, generator=g)


def tiny_moco() -> MoCoV2:
    head = MLPHeadConfig(hidden_dims=[32], output_dim=16, batch_norm=False)
    method = tiny_method(MoCoV2, MoCoV2Config(queue_length=QUEUE), head)
    assert isinstance(method, MoCoV2)
    method.queue_pointer.fill_(START)
    return method


def _rank(rank: int, world: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    out = dino_two_steps(rank, dist.group.WORLD)
    method = tiny_moco()
    method.set_process_group(dist.group.WORLD)
    queries, keys = (x[rank * N // world : (rank + 1) * N // world] for x in moco_images())
    out["keys"] = method.keys(keys, MOCO_STEP)[0]
    ctx = StepContext(MOCO_STEP, 0, 10, 10)
    method.training_step([queries, keys], ctx)
    method.after_optimizer_step(ctx)  # enqueues the step's keys
    out["queue"], out["pointer"] = method.queue, method.queue_pointer
    return out


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    return run_distributed(_rank, WORLD)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def test_dino_loss_gradients_and_centre_are_global(ranks: list[dict[str, Any]]) -> None:
    full = dino_two_steps(0, None)
    for step in range(2):
        # The second step's loss uses the centre updated from the first step's global batch.
        mean_loss = sum(r[f"loss{step}"] for r in ranks) / WORLD
        torch.testing.assert_close(mean_loss, full[f"loss{step}"], rtol=RTOL, atol=ATOL)
        for rank, r in enumerate(ranks):
            # DDP averages gradients over ranks: rank r's gradient / WORLD is the global one.
            expected = full[f"grad{step}"][local_rows(rank, CROPS)]
            torch.testing.assert_close(r[f"grad{step}"] / WORLD, expected, rtol=RTOL, atol=ATOL)
            torch.testing.assert_close(r[f"center{step}"], full[f"center{step}"], rtol=RTOL, atol=ATOL)


def test_dino_centre_from_one_rank_alone_differs(ranks: list[dict[str, Any]]) -> None:
    # Guard against a test that cannot fail: a centre from rank 0's half batch is another value.
    _, teacher = dino_inputs(0)
    local = updated_center(torch.zeros(1, K, dtype=torch.float64), teacher[local_rows(0, 2)], 0.9)
    assert not torch.allclose(local, ranks[0]["center0"])


def test_moco_shuffled_keys_and_queue(ranks: list[dict[str, Any]]) -> None:
    # Shuffle-BN: the global key batch, permuted, is split over the ranks; each rank's key encoder
    # normalises its slice with that slice's batch statistics. Recompute that on one process.
    _, images = moco_images()
    method = tiny_moco()
    order = shuffle_order(N, MOCO_STEP)
    expected = torch.empty(N, 16)
    unshuffled = torch.empty(N, 16)
    with torch.no_grad():
        for rank in range(WORLD):
            part = order[rank * N // WORLD : (rank + 1) * N // WORLD]
            expected[part] = method.encode_keys(images[part])
            mine = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
            unshuffled[mine] = method.encode_keys(images[mine])
    assert not torch.allclose(expected, unshuffled, atol=1e-4)  # the permutation changed the statistics
    for rank, r in enumerate(ranks):
        torch.testing.assert_close(r["keys"], expected[rank * N // WORLD : (rank + 1) * N // WORLD])
    # Every rank enqueued the keys of the whole global batch, in rank order, from row START on.
    torch.testing.assert_close(ranks[0]["queue"], ranks[1]["queue"], rtol=0, atol=0)
    rows = [(START + i) % QUEUE for i in range(N)]
    torch.testing.assert_close(ranks[0]["queue"][rows], expected)
    assert int(ranks[0]["pointer"]) == int(ranks[1]["pointer"]) == (START + N) % QUEUE
