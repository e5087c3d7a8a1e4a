"""A run's worker processes stop when the process that started them is killed."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads processes from /proc"
)

SCRIPT = textwrap.dedent(
    """
    from lopbook.experiments import PermutedMNIST, run_permuted_mnist
    configs = [PermutedMNIST(tasks=10_000, examples_per_task=500, width=w, depth=1,
                             metrics_every=0, data="digits") for w in (8, 9)]
    run_permuted_mnist(configs, out_dir="runs", workers=2, device="cpu",
                       progress=False)
    """
)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOPBOOK_")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env)
    try:
        deadline = time.time() + 120
        workers = []
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.5)
            # the spawned workers (the resource tracker and manager are children too)
            workers = [
                p
                for p in children(parent.pid)
                if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
                and b"pipe_handle" in Path(f"/proc/{p}/cmdline").read_bytes()
            ]
            workers = [p for p in workers if list((tmp_path / "runs").glob("*/*"))]
        assert parent.poll() is None, "the run ended before it could be killed"
        assert workers, "no worker processes started"
        started = children(parent.pid)  # the workers and the resource tracker
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(alive(p) for p in started):
            time.sleep(0.2)
        left = [p for p in started if alive(p)]
        assert not left, f"processes outlived their parent: {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
