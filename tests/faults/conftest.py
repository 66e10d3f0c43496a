"""Shared, session-wide fixtures: one image folder and one uninterrupted reference run per world
size, against which every interrupted run is compared (the LR schedule spans max_epochs, so a
shorter run's losses are a prefix of the reference's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.common import losses, trained_run
from tests.helpers import make_image_folder


@pytest.fixture(scope="session")
def fault_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("fault_images"))


def _reference(data: Path, folder: Path, world: int) -> dict[int, float]:
    return losses(trained_run(data, folder, world=world))


@pytest.fixture(scope="session")
def reference(fault_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """Losses of the uninterrupted 24-step run in one process."""
    return _reference(fault_data, tmp_path_factory.mktemp("reference") / "run", 1)


@pytest.fixture(scope="session")
def reference_two(fault_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """Losses of the uninterrupted 12-step run in two processes."""
    return _reference(fault_data, tmp_path_factory.mktemp("reference_two") / "run", 2)


@pytest.fixture(scope="session")
def trained_three_steps(fault_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped after its step-3 checkpoint (tests copy it before changing anything)."""
    return trained_run(fault_data, tmp_path_factory.mktemp("three_steps") / "run", "trainer.max_steps=3")
