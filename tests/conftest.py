"""Shared fixtures, and the threads each test process may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import make_image_folder

_THREADS_SET_BY_USER = "OMP_NUM_THREADS" in os.environ


def pytest_configure(config: pytest.Config) -> None:
    """`make test` runs TEST_WORKERS pytest workers side by side, and most tests start more
    processes (a training run, its ranks). With torch's default of one thread per core in every
    one of them the cores are oversubscribed, and spin-waiting threads slow everything down
    (measured on 2 cores, 2 workers: 92 s against 54 s for three subprocess-heavy test files).
    So each worker, and every process it starts (they inherit the variable), gets its share of
    the cores. This runs in pytest-xdist's controller before it starts the workers, which inherit
    the value; a value the user set is kept."""
    if _THREADS_SET_BY_USER:
        return
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT") or getattr(config.option, "numprocesses", None)
    cores = os.cpu_count() or 1
    count = int(workers) if str(workers).isdigit() and int(workers) > 0 else 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // count))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")
