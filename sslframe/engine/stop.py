"""Stop requests, and the exit-status contract between the training loop and its launchers.

A run asked to stop (SIGTERM from ``scancel`` or preemption, SIGUSR1, or a launcher's explicit
``request_stop``, as the SLURM job does on submitit's time-limit warning) finishes its step on
every rank, writes one complete checkpoint and returns ``preempted``; the process then exits with
``PREEMPTED_EXIT``, which launchers read as "requeue and resume".
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# EX_TEMPFAIL ("temporary failure, try again"): a run stopped on request after its checkpoint.
PREEMPTED_EXIT = 75

# The signals the loop takes as stop requests while it trains.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """What asked the loop to stop: a signal number, a launcher's reason, or None."""

    def __init__(self) -> None:
        self.received: int | str | None = None


_current: StopRequest | None = None


def request_stop(reason: int | str) -> bool:
    """Ask the training loop of this process to stop after its step (a launcher's API; also what
    the signal handlers call). False when no loop is training here."""
    if _current is None:
        return False
    _current.received = reason
    return True


@contextmanager
def listening() -> Iterator[StopRequest]:
    """While training: stop signals and ``request_stop`` land in the yielded request; the
    previous signal handlers come back afterwards."""
    global _current
    request = StopRequest()
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            old[sig] = signal.signal(sig, lambda signum, _frame: request_stop(signum))
    previous, _current = _current, request
    try:
        yield request
    finally:
        _current = previous
        for sig, handler in old.items():
            signal.signal(sig, handler)
