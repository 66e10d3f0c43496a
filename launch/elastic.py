"""A SLURM job that lost a node goes on with the nodes it has left (``launcher.min_nodes``).

With ``launcher.min_nodes`` below ``launcher.nodes`` the job is submitted with ``--no-kill``: when
a node stops answering, SLURM takes it out of the allocation and ends the job step (its tasks on
the other nodes are killed once the controller declares the node down, after ``SlurmdTimeout``;
the ranks usually fail sooner, on a closed connection or ``distributed.timeout_s``) but keeps the
job and its batch script. The batch script then runs ``python -m launch.elastic``, which looks at
the allocation: if it shrank and still has at least ``min_nodes`` nodes, it records a
``node_lost`` event and starts the same tasks again on the nodes left (a new job step, one
``tasks_per_node`` per node); they resume from the newest complete checkpoint at the smaller
world size, with the batch handled as ``trainer.on_world_size_change`` says. A failure that lost
no node ends the job as before, and so does a job left with fewer than ``min_nodes`` nodes.

Why not requeue: SLURM (22.05 measured) requeues a job with its original task count, so a job
asked for as 2 nodes x 1 task waits for two nodes again, and a node range (``--nodes=1-2``) is
allocated at its minimum even when more nodes are idle. Continuing inside the allocation is what
``--no-kill`` is for. When the node lost is the one that runs the batch script, nothing of the
job is left to continue: SLURM requeues it (``--requeue``) for its full node count.

    python -m launch.elastic --status $? --tasks-per-node T --min-nodes M --run-dir DIR -- SRUN_ARGS...
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from launch.records import append_event

log = logging.getLogger("launch.elastic")

# Tells TrainJob that its tasks continue a run whose step ended with a node lost.
CONTINUED_ENV = "SSLFRAME_CONTINUED_AFTER_NODE_LOSS"


def hostnames(nodelist: str) -> list[str]:
    """``sslnode[1-2],gpu7`` as a list of host names (``scontrol show hostnames``)."""
    if not nodelist or nodelist == "(null)":
        return []
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()


def allocation(job_id: str) -> list[str]:
    """The nodes the job holds now, from ``scontrol show job``."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True)
    match = re.search(r"^\s*NodeList=(\S+)", out.stdout, flags=re.M)
    return hostnames(match.group(1)) if match else []


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m launch.elastic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--status", type=int, required=True, help="exit status of the step that ended")
    parser.add_argument("--tasks-per-node", type=int, required=True)
    parser.add_argument("--min-nodes", type=int, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("the step's command (srun arguments) goes after --")
    return args, command


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%X")
    args, command = parse_args(argv)
    job_id = os.environ["SLURM_JOB_ID"]
    nodes = hostnames(os.environ.get("SLURM_JOB_NODELIST", ""))
    status, attempt = args.status, 0
    while status != 0:
        left = allocation(job_id)
        lost = [n for n in nodes if n not in left]
        if not lost:
            log.info("the job step ended with status %d and every node is still in the job: not a lost node", status)
            break
        if len(left) < args.min_nodes:
            log.error("lost %s; %d node(s) left, under launcher.min_nodes=%d", lost, len(left), args.min_nodes)
            append_event(args.run_dir, "end", status="node_lost", lost=lost, nodes=left, job_id=job_id)
            break
        attempt += 1
        tasks = len(left) * args.tasks_per_node
        log.warning("lost %s: continuing on %s (%d tasks) from the newest checkpoint", lost, left, tasks)
        append_event(args.run_dir, "node_lost", job_id=job_id, lost=lost, nodes=left, tasks=tasks, status=status)
        env = dict(os.environ)
        env[CONTINUED_ENV] = str(attempt)
        # The job's node list still names the lost nodes; rank 0 runs on the first node left, and
        # its rendezvous moves to another port (the old one may still be in TIME_WAIT).
        env["MASTER_ADDR"] = left[0]
        env["MASTER_PORT"] = str(20000 + (int(job_id) + 1000 * attempt) % 20000)
        for stale in ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NNODES", "SLURM_TASKS_PER_NODE"):
            env.pop(stale, None)
        # --overlap: the ended step still holds its CPUs in the controller's books until the lost
        # node answers again (scancel cannot end it), and a new step would wait for them.
        step = ["srun", "--overlap", f"--nodes={len(left)}", f"--ntasks={tasks}"]
        step += [f"--ntasks-per-node={args.tasks_per_node}", f"--nodelist={','.join(left)}", *command]
        status = subprocess.run(step, env=env, check=False).returncode
        nodes = left
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
