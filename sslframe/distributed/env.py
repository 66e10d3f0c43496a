"""Process-group set-up from torchrun or SLURM variables; a lone process needs none."""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    node_rank: int = 0
    launcher: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def group(self) -> ProcessGroup | None:
        """The default group when running distributed, else ``None`` (local-only losses)."""
        return dist.group.WORLD if dist.is_available() and dist.is_initialized() else None


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a SLURM node list such as ``node[003-005,007],gpu1``."""
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if not match:
        return nodelist
    prefix, _, ranges = match.groups()
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def detect_env() -> DistEnv:
    """Read rank and world size from torchrun (RANK...) or SLURM (SLURM_PROCID...) variables."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return DistEnv(
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            node_rank=int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", 0))),
            launcher="torchrun",
        )
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        os.environ.setdefault("MASTER_ADDR", first_slurm_host(os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1")))
        os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
        return DistEnv(
            rank=int(os.environ["SLURM_PROCID"]),
            world_size=int(os.environ["SLURM_NTASKS"]),
            local_rank=int(os.environ.get("SLURM_LOCALID", 0)),
            node_rank=int(os.environ.get("SLURM_NODEID", 0)),
            launcher="slurm",
        )
    return DistEnv()


def init_distributed(device: str, timeout_s: float = 1800) -> DistEnv:
    """Initialise the default process group (NCCL on CUDA, gloo on CPU) when world size > 1;
    a collective that does not complete within ``timeout_s`` fails."""
    env = detect_env()
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    if env.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s)
        store = restart_store(timeout)
        dist.init_process_group(
            backend=backend,
            init_method=None if store is not None else "env://",
            store=store,
            rank=env.rank,
            world_size=env.world_size,
            timeout=timeout,
        )
    return env


def restart_store(timeout: datetime.timedelta) -> dist.Store | None:
    """Under torchrun's agent store: that store, with keys of this restart attempt only.

    After torchrun restarts its workers (``--max-restarts``, ``launcher.max_restarts``), the
    agent's store still holds what the previous attempt's process group wrote there, the peers'
    addresses among them; a new worker reading one connects to a process that is gone (seen:
    "Gloo connectFullMesh failed ... Connection refused"). One prefix per attempt keeps the
    attempts apart. None elsewhere (SLURM, a plain env:// rendezvous)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"sslframe/attempt_{attempt}", rendezvous_client(timeout))


def rendezvous_client(timeout: datetime.timedelta) -> dist.Store:
    """A client of the rendezvous store at ``MASTER_ADDR:MASTER_PORT`` (torchrun's agent store,
    or the one rank 0 hosts under SLURM)."""
    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)


def teardown(wait_for_peers: bool = False) -> None:
    """Destroy the process group. ``wait_for_peers`` (after a run that ended normally on every
    rank): first a barrier, so no rank closes its connections while another is still using them."""
    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()
