"""Which rank stopped answering: heartbeats through the process group's store.

A collective that a rank never joins (the rank is stopped, hung, or its node is gone) fails on
the other ranks only after ``distributed.timeout_s``, and the backend's error names neither the
rank nor the step (gloo: "Timed out waiting 5000ms for recv operation to complete"; NCCL's
watchdog ends the process). So every rank runs a small thread that writes ``<time> <step>``
under ``heartbeat/<rank>`` in the rendezvous store every ``interval`` seconds. A thread keeps
beating while the main thread waits inside a collective (it releases the GIL), but not when the
process is stopped or dead, so a rank whose beat is older than a few intervals is one that stopped
answering. Rank 0 checks the others' beats each interval and logs the ranks gone quiet (useful
under NCCL, whose timeout kills the process); ``CollectiveTimeout`` carries the same diagnosis
when a collective times out. Cost: one small store write per rank per interval, and rank 0 reads
world-size keys per interval.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch.distributed as dist

from sslframe.distributed.env import rendezvous_client
from sslframe.errors import UserError

log = logging.getLogger(__name__)

PREFIX = "sslframe/heartbeat/"


@dataclass(frozen=True)
class Beat:
    rank: int
    age_s: float | None  # None: never beat (or the store could not be read)
    step: int | None


class CollectiveTimeout(UserError):
    """A collective did not complete within ``distributed.timeout_s``; the message names the
    step, what the loop was doing, and the ranks that stopped answering where they are known.
    Reported as one line (it is the diagnosis, not a bug of the program)."""

    exit_code = 1


def is_timeout(exc: BaseException) -> bool:
    """True for the backends' collective timeouts (gloo's "Timed out waiting", NCCL's watchdog
    "Watchdog caught collective operation timeout", the store's "timeout")."""
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, dist.DistError)) and ("timed out" in text or "timeout" in text)


class Heartbeat:
    """Beats of this rank, and the others' as rank 0 sees them (module docstring)."""

    def __init__(self, rank: int, world_size: int, interval_s: float) -> None:
        self.rank = rank
        self.world_size = world_size
        self.interval_s = interval_s
        # Where the loop is, set by it: the step and what it is doing (for the messages).
        self.step = 0
        self.phase = "setup"
        self.store = _store_client()
        self._stop = threading.Event()
        self._reported: set[int] = set()
        self._thread: threading.Thread | None = None
        if self.store is not None and world_size > 1:
            self._beat()
            self._thread = threading.Thread(target=self._run, name="sslframe-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        self.store.set(f"{PREFIX}{self.rank}", f"{time.time():.3f} {self.step}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._beat()
                if self.rank == 0:
                    self._report_quiet()
            except Exception as exc:  # a lost store must not take training down with it
                log.debug("heartbeat: %s", exc)

    def _report_quiet(self) -> None:
        for beat in self.quiet_ranks():
            if beat.rank not in self._reported:
                self._reported.add(beat.rank)
                log.error("rank %d has not answered for %s", beat.rank, describe(beat))

    def beats(self) -> list[Beat]:
        """Every rank's last beat (age and step); ``age_s`` None where there is none to read."""
        if self.store is None:
            return []
        now = time.time()
        out = []
        for r in range(self.world_size):
            key = f"{PREFIX}{r}"
            try:
                if not self.store.check([key]):
                    out.append(Beat(r, None, None))
                    continue
                stamp, step = self.store.get(key).decode().split()
            except Exception:
                out.append(Beat(r, None, None))
                continue
            out.append(Beat(r, now - float(stamp), int(step)))
        return out

    def quiet_ranks(self) -> list[Beat]:
        """Ranks whose last beat is older than three intervals (or that cannot be read)."""
        return [b for b in self.beats() if b.rank != self.rank and (b.age_s is None or b.age_s > 3 * self.interval_s)]

    @contextmanager
    def watch(self, timeout_s: float) -> Iterator[None]:
        """Turn a collective's timeout inside into ``CollectiveTimeout`` naming the quiet ranks;
        the heartbeat stops on the way out."""
        try:
            yield
        except (RuntimeError, dist.DistError) as exc:
            if self.world_size > 1 and is_timeout(exc) and not isinstance(exc, UserError):
                raise CollectiveTimeout(timeout_message(exc, self, timeout_s)) from exc
            raise
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)


def describe(beat: Beat) -> str:
    if beat.age_s is None:
        return "an unknown time (its heartbeat could not be read)"
    when = f"during step {beat.step}" if beat.step else "before the first step"
    return f"{beat.age_s:.0f} s (its last heartbeat was {when})"


def timeout_message(exc: BaseException, heartbeat: Heartbeat, timeout_s: float) -> str:
    quiet = heartbeat.quiet_ranks()
    who = (
        "; ".join(f"rank {b.rank} has not answered for {describe(b)}" for b in quiet)
        if quiet
        else "every rank's heartbeat is recent, so a rank is alive but stuck (a deadlock or a mismatched collective)"
    )
    return (
        f"rank {heartbeat.rank}: a collective during {heartbeat.phase} at step {heartbeat.step} did not "
        f"complete within distributed.timeout_s={timeout_s:g} s: {who}. Stopping this rank; the newest checkpoint is "
        f"intact, resume with trainer.resume=auto. ({type(exc).__name__}: {str(exc).strip().splitlines()[-1]})"
    )


def _store_client() -> dist.Store | None:
    """A client of the rendezvous store (``MASTER_ADDR:MASTER_PORT``: torchrun's agent store, or
    the store rank 0 hosts under SLURM) with a short timeout of its own, so reading beats never
    hangs when the rank hosting the store is the one that stopped; None without a group."""
    import os

    if not (dist.is_available() and dist.is_initialized()) or "MASTER_ADDR" not in os.environ:
        return None
    try:
        return rendezvous_client(datetime.timedelta(seconds=10))
    except Exception as exc:
        log.warning("heartbeat: cannot reach the rendezvous store (%s); hung ranks will not be named", exc)
        return None
