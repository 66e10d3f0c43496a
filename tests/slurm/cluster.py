"""Whether the SLURM test cluster of tests/slurm/cluster.sh is up (one node, or also the two
namespaced ones), and waiting on its jobs."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

CLUSTER_SCRIPT = Path(__file__).with_name("cluster.sh")
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def cluster_skip_reason() -> str | None:
    """None when the test cluster accepts jobs, else why the SLURM tests are skipped."""
    if shutil.which("sbatch") is None:
        return "SLURM is not installed (as root on Debian: bash tests/slurm/cluster.sh start)"
    status = subprocess.run(["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True, timeout=60, check=False)
    if status.returncode != 0:
        return "the SLURM test cluster is not running (as root on Debian: bash tests/slurm/cluster.sh start)"
    return None


def two_node_skip_reason() -> str | None:
    """None when the cluster also runs its two namespaced nodes (``cluster.sh start --nodes 2``)."""
    reason = cluster_skip_reason()
    if reason is not None:
        return reason
    status = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "status", "--nodes", "2"], capture_output=True, timeout=60, check=False
    )
    if status.returncode != 0:
        return "the two-node SLURM test cluster is not running (as root: bash tests/slurm/cluster.sh start --nodes 2)"
    return None


def cluster(*args: str) -> None:
    """Run ``tests/slurm/cluster.sh`` with these arguments (``kill-node sslnode2``, ...)."""
    subprocess.run(["bash", str(CLUSTER_SCRIPT), *args], capture_output=True, text=True, timeout=120, check=True)


def job_state(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-a", "-t", "all", "-o", "%T", "-j", job_id], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "GONE"


def wait_for_job(job_id: str, timeout: float = 300) -> str:
    """Wait until SLURM reports the job ended; returns its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(job_id)
        if state in ENDED or state == "GONE":
            return state
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], check=False)
    raise AssertionError(f"job {job_id} did not end within {timeout} s (last state {state})")
