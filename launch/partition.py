"""Will SLURM ever start this job? The request compared with the partition's nodes before submitting.

SLURM accepts a job that asks for more than any node of its partition has (CPUs, memory, GPUs per
node) and leaves it pending for ever (reason ``PartitionConfig`` or ``ReqNodeNotAvail``) without
telling the user. ``check_request_fits`` reads the partition's nodes with ``sinfo`` and refuses such a
request in one line that names the request and the largest node. Drained or down nodes count (they
may come back); a request with ``launcher.constraint`` is not checked (features are the site's
vocabulary), and nor is anything when ``sinfo`` cannot be run or read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from omegaconf import DictConfig

from sslframe.errors import UserError


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int


def parse_gpus(gres: str) -> int:
    """GPUs in a ``sinfo %G`` field: ``gpu:8``, ``gpu:a100:4(S:0-1)``, ``gpu:2,shard:8``, ``(null)``."""
    total = 0
    for item in gres.split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def partition_nodes(partition: str) -> tuple[str, list[Node]] | None:
    """(partition name, its nodes) from ``sinfo``; the default partition when ``partition`` is
    empty; None where sinfo is missing or fails."""
    if shutil.which("sinfo") is None:
        return None
    command = ["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%P"]
    if partition:
        command += ["-p", partition]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    nodes: dict[str, Node] = {}
    chosen = partition
    for line in out.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, cpus, memory, gres, part = fields
        is_default = part.endswith("*")
        part = part.rstrip("*")
        if not partition:
            if not is_default:
                continue
            chosen = part
        elif part != partition:
            continue
        try:
            nodes[name] = Node(name, int(cpus.rstrip("+")), int(memory.rstrip("+")), parse_gpus(gres))
        except ValueError:
            continue
    return chosen, list(nodes.values())


def check_request_fits(launcher: DictConfig, tasks_per_node: int) -> None:
    """Raise UserError when fewer than the job's nodes (``launcher.min_nodes`` where set, else
    ``launcher.nodes``) of the partition can each hold one node's share of it (module docstring)."""
    if launcher.get("constraint"):
        return
    found = partition_nodes(launcher.partition)
    if found is None:
        return
    partition, nodes = found
    where = f"partition '{partition}'" if partition else "the default partition"
    if not nodes:
        if launcher.partition:
            raise UserError(f"launcher.partition='{launcher.partition}' has no nodes (sinfo lists none)")
        return
    cpus = tasks_per_node * launcher.cpus_per_task
    memory_mb = launcher.mem_gb * 1024
    gpus = launcher.gpus_per_node
    fitting = [n for n in nodes if n.cpus >= cpus and n.memory_mb >= memory_mb and n.gpus >= gpus]
    needed = launcher.get("min_nodes") or launcher.nodes
    if len(fitting) >= needed:
        return
    largest = max(nodes, key=lambda n: (n.gpus, n.cpus, n.memory_mb))
    asked = f"{cpus} CPUs ({tasks_per_node} tasks x launcher.cpus_per_task={launcher.cpus_per_task})"
    if memory_mb:
        asked += f", {launcher.mem_gb} GB"
    if gpus:
        asked += f", {gpus} GPUs"
    raise UserError(
        f"this job could never start: it asks for {needed} node(s) with {asked} each, and {where} "
        f"has {len(fitting)} node(s) that large (of {len(nodes)}); its largest node, {largest.name}, has "
        f"{largest.cpus} CPUs, {largest.memory_mb // 1024} GB and {largest.gpus} GPUs (lower "
        "launcher.cpus_per_task, launcher.mem_gb or launcher.gpus_per_node, or pick another launcher.partition)"
    )
