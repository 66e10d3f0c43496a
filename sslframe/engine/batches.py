"""The loop's batches: each step's batch from the data position the step implies, on the device,
augmented per batch where the recipe says so (``transform.backend=batch``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from sslframe.data.loader import sample_seed


class StepBatches:
    """Batches from any step on, crossing epochs. The data position (epoch, batch in epoch) is
    derived from the step, which every checkpoint holds; the order of every source (folder,
    filelist, shards) is a pure function of it, so a resumed run continues mid-epoch at the exact
    sample, and a per-batch augmentation is seeded by (seed, step, rank), so it repeats too."""

    def __init__(
        self,
        data: Any,
        batch_transform: Any,
        device: torch.device,
        memory_format: torch.memory_format,
        seed: int,
        rank: int,
    ) -> None:
        self.data = data
        self.batch_transform = batch_transform
        self.device = device
        self.memory_format = memory_format
        self.seed = seed
        self.rank = rank
        self.steps_per_epoch = data.steps_per_epoch

    def from_step(self, current_step: Callable[[], int]) -> Iterator[tuple[int, Any]]:
        """(epoch, batch) for ``current_step()`` and on; the loop advances the step between batches."""
        while True:
            epoch, in_epoch = divmod(current_step(), self.steps_per_epoch)
            self.data.set_position(epoch, in_epoch)
            for batch in self.data:
                yield epoch, batch
                if current_step() % self.steps_per_epoch == 0:
                    break

    def epoch(self, epoch: int) -> Iterator[tuple[int, Any]]:
        """(index in the epoch, batch) for every batch of ``epoch`` (a pass over the data)."""
        self.data.set_position(epoch, 0)
        for i, batch in enumerate(self.data):
            if i == self.steps_per_epoch:
                return
            yield i, batch

    def indices(self, batch: Any) -> torch.Tensor | None:
        """The batch's dataset indices on the device (memory banks keyed by sample)."""
        return batch.indices.to(self.device, non_blocking=True) if batch.indices is not None else None

    def crops(self, batch: Any, step: int, *stream: int) -> list[torch.Tensor]:
        """The batch's views on the device in the run's memory layout (``stream`` keeps other uses
        of a step's augmentation seed apart)."""
        views = [v.to(self.device, non_blocking=True) for v in batch.views]
        if self.batch_transform is not None:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, step, self.rank, *stream))
            views = self.batch_transform(views[0], batch.sizes, generator)
        return [v.contiguous(memory_format=self.memory_format) for v in views]
