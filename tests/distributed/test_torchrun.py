"""tools/train.py under torchrun: several processes, and two "nodes" on 127.0.0.1 (gloo, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sslframe.distributed import checkpoint as ckpt
from tests.distributed.harness import free_port
from tests.helpers import ROOT, TINY


def torchrun(*args: str, timeout: int = 600) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        str(ROOT / "tools" / "train.py"),
        "config=quickstart",
        *TINY,
        "data=folder",
        f"data.path={data}",
        f"run.dir={run}",
        "trainer.max_epochs=1",
        "data.batch_size=4",
        *extra,
    ]


def finish(proc: subprocess.Popen[str], timeout: int = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_with_ddp(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    port = free_port()
    finish(torchrun("--nproc_per_node=2", f"--master_port={port}", *train_args(image_folder, run)))
    records = metrics(run)
    # 32 images, 2 ranks x 4 per rank: 4 steps per epoch, global batch 8.
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[0]["batch_size"] == 4 and records[0]["global_batch_size"] == 8
    ckpt = run / "checkpoints" / "step_00000004"
    assert (ckpt / "rank_00000.pt").is_file() and (ckpt / "rank_00001.pt").is_file()
    assert json.loads((ckpt / "meta.json").read_text())["world_size"] == 2


def test_two_nodes_on_localhost(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    port = free_port()
    common = [
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=sslframe-test",
    ]
    nodes = [torchrun(*common, f"--node_rank={k}", *train_args(image_folder, run)) for k in (0, 1)]
    for node in nodes:
        finish(node)
    assert metrics(run)[-1]["global_batch_size"] == 8
    assert (run / "checkpoints" / "step_00000004" / "rank_00001.pt").is_file()


def test_checkpoint_from_two_ranks_resumes_on_one(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    port = free_port()
    finish(
        torchrun(
            "--nproc_per_node=2",
            f"--master_port={port}",
            *train_args(image_folder, run, "trainer.max_steps=2", "trainer.max_epochs=2"),
        )
    )
    # One process with twice the per-rank batch keeps the global batch and the sample order.
    single = subprocess.run(
        [sys.executable, *train_args(image_folder, run, "trainer.max_epochs=2", "data.batch_size=8")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert single.returncode == 0, single.stderr
    steps = [r["step"] for r in metrics(run)]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert metrics(run)[-1]["global_batch_size"] == 8


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: the command name may hold spaces, so split after it.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def hosts_port(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on TCP ``port`` (/proc/net/tcp*)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                listening.add(f"socket:[{fields[9]}]")
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) in listening:
                return True
        except OSError:
            continue
    return False


def test_elastic_agents_go_on_without_a_lost_node(image_folder: Path, tmp_path: Path) -> None:
    """torchrun --nnodes=1:2 --max-restarts=1 with two agents ("nodes") on 127.0.0.1: one agent
    and its worker are SIGKILLed after the step-6 checkpoint. The other worker fails on the closed
    connection, its agent restarts it, the rendezvous closes with the one node left, and the run
    resumes from the newest complete checkpoint at world size 1 with the same global batch."""
    run = tmp_path / "run"
    port = free_port()
    steps = 60  # 32 images, global batch 8: 4 steps per epoch
    common = [
        "--nnodes=1:2",
        "--nproc_per_node=1",
        "--max-restarts=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=sslframe-elastic",
        # A rendezvous with fewer than the most nodes closes this long after the last one joined.
        "--rdzv_conf=last_call_timeout=10",
    ]
    extra = ("trainer.max_epochs=15", "trainer.checkpoint_every=3", "distributed.timeout_s=60")
    nodes = [torchrun(*common, *train_args(image_folder, run, *extra)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 300
        while not ckpt.is_complete(run / "checkpoints" / ckpt.checkpoint_name(6), verify=False):
            assert time.monotonic() < deadline and nodes[0].poll() is None, "no step-6 checkpoint"
            time.sleep(0.05)
        # The agent that bound the port hosts the c10d rendezvous store; losing it loses the
        # rendezvous itself (torchrun's c10d backend has no failover), so the other one goes.
        hosting = [node for node in nodes if hosts_port(node.pid, port)]
        assert len(hosting) == 1, "one agent should host the rendezvous store"
        [lost] = [node for node in nodes if node is not hosting[0]]
        nodes = [hosting[0], lost]
        for pid in [lost.pid, *children(lost.pid)]:
            os.kill(pid, signal.SIGKILL)
        lost.wait(timeout=60)
        out = finish(nodes[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    [change] = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert change["world_size"] == [2, 1] and change["global_batch"] == [8, 8]
    resumed = change["step"][0]
    assert 6 <= resumed < steps and f"resumed from {run / 'checkpoints' / ckpt.checkpoint_name(resumed)}" in out
    worlds = {r["step"]: r["world_size"] for r in metrics(run)}  # a step logged twice keeps the last
    assert sorted(worlds) == list(range(1, steps + 1))
    assert {worlds[s] for s in range(1, resumed + 1)} == {2}
    assert {worlds[s] for s in range(resumed + 1, steps + 1)} == {1}
    assert {r["global_batch_size"] for r in metrics(run)} == {8}
