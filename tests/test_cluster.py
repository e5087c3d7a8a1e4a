"""Tests of lopbook.cluster: a list of configs submitted as one job per lockstep group
(submitit), saved in the runner's out_dir, and loaded by run() afterwards.

The end-to-end test runs the jobs with submitit's LocalExecutor (processes on this
machine); Slurm is checked up to the sbatch script, with stand-ins for srun and sbatch.
Tests that need submitit are skipped where it is not installed (``pip install
'lopbook[cluster]'``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import sys
import time

import numpy as np
import pytest

from lopbook import cluster, runner
from lopbook.data import locations
from lopbook.engine import Lockstep
from lopbook.experiments import ContinualImageNet, PermutedMNIST, RunOptions
from lopbook.learners import Learner
from lopbook.results import load_result

pytestmark = pytest.mark.filterwarnings("ignore::lopbook.data.DataWarning")

CBP = dict(
    method="continual_backprop",
    hyperparameters=dict(replacement_rate=0.01, maturity_threshold=50),
)


def mnist(**changes):
    settings = dict(
        tasks=3,
        examples_per_task=150,
        width=16,
        depth=2,
        step_size=0.02,
        metrics_every=2,
        probe_size=100,
        data="digits",
    )
    settings.update(changes)
    return PermutedMNIST(**settings)


# two lockstep groups: width 16 (two runs) and width 24 (one run)
GROUP_A = [mnist(seed=0), mnist(seed=1, **CBP)]
GROUP_B = [mnist(seed=0, width=24)]
CONFIGS = GROUP_A + GROUP_B


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    for name in ("LOPBOOK_DATA", "LOPBOOK_SCALE", "LOPBOOK_DEVICE", "LOPBOOK_RESULTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(locations, "reachable", lambda urls, timeout=0.0: False)


@pytest.fixture(scope="module")
def reference():
    """CONFIGS trained here, nothing saved."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(locations, "reachable", lambda urls, timeout=0.0: False)
        return runner.run(CONFIGS, device="cpu", progress=False, workers=1)


def assert_identical(a, b):
    assert a.config == b.config
    assert np.array_equal(a.accuracy, b.accuracy)
    assert np.array_equal(a.train_accuracy, b.train_accuracy)
    assert sorted(a.metrics) == sorted(b.metrics)
    for key in a.metrics:
        assert np.array_equal(a.metrics[key], b.metrics[key]), key


def forbid_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training was started")

    monkeypatch.setattr(Lockstep, "__init__", refuse)
    monkeypatch.setattr(Lockstep, "learn", refuse)
    monkeypatch.setattr(Learner, "learn", refuse)


def options(out_dir, **changes):
    return RunOptions(out_dir=out_dir, device="cpu", workers=1, **changes)


def wait(jobs, timeout=180):
    """The jobs' results, waiting at most ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    while not all(job.done() for job in jobs):
        if time.monotonic() > deadline:
            for job in jobs:
                job.cancel()
            pytest.fail(f"the jobs did not end in {timeout} s")
        time.sleep(0.2)
    return [job.result() for job in jobs]


# ------------------------------------------------------------------------ no submitit
def test_without_submitit_the_module_imports_and_says_what_to_install(
    monkeypatch, tmp_path
):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` fails
    module = importlib.reload(cluster)
    with pytest.raises(ImportError, match=r"pip install 'lopbook\[cluster\]'"):
        module.submit(CONFIGS, options(tmp_path), object())
    with pytest.raises(ImportError, match="pip install submitit"):
        module.slurm_executor(tmp_path)


# ------------------------------------------------------------------------ end to end
def test_groups_run_as_local_jobs_and_run_loads_them(reference, tmp_path, monkeypatch):
    """Two groups, two jobs (processes started by submitit's LocalExecutor); their runs
    appear in out_dir, with the numbers of runs trained here, and run() then loads them
    without training."""
    submitit = pytest.importorskip("submitit")
    out = tmp_path / "out"
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=5)
    relabelled = dataclasses.replace(GROUP_A[1], label="asked for twice")
    jobs = cluster.submit(CONFIGS + [relabelled], options(out), executor)
    assert len(jobs) == 2
    returned = wait(jobs)
    assert [len(r) for r in returned] == [2, 1]
    for result, expected in zip(returned[0] + returned[1], reference):
        assert_identical(result, expected)
        saved = load_result(runner.run_directory(expected.config, out))
        assert saved.complete
        assert_identical(saved, expected)

    with monkeypatch.context() as m:  # the parent trains nothing: it loads
        forbid_training(m)
        loaded = runner.run(CONFIGS, options(out), progress=False)
        assert cluster.submit(CONFIGS, options(out), executor) == []  # all finished
    for a, b in zip(loaded, reference):
        assert_identical(a, b)


def test_finished_runs_and_groups_are_not_submitted(reference, tmp_path, monkeypatch):
    """With submitit's DebugExecutor (jobs run in this process on result())."""
    submitit = pytest.importorskip("submitit")
    out = tmp_path / "out"
    runner.run(GROUP_A[:1], options(out), progress=False)  # one run already finished
    executor = submitit.DebugExecutor(folder=tmp_path / "jobs")
    jobs = cluster.submit(CONFIGS, options(out), executor)
    groups = [job.submission().function for job in jobs]
    assert all(isinstance(g, cluster.GroupJob) for g in groups)
    assert [g.configs for g in groups] == [GROUP_A[1:], GROUP_B]
    assert groups[0].options.out_dir == str(out) and groups[0].options.progress is False
    for job, expected in zip(jobs, [reference[1:2], reference[2:]]):
        for a, b in zip(job.result(), expected):
            assert_identical(a, b)
    with monkeypatch.context() as m:
        forbid_training(m)
        assert cluster.submit(CONFIGS, options(out), executor) == []
        for a, b in zip(runner.run(CONFIGS, options(out), progress=False), reference):
            assert_identical(a, b)


def test_runs_per_job_splits_groups(reference, tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.DebugExecutor(folder=tmp_path / "jobs")
    out = tmp_path / "out"
    jobs = cluster.submit(CONFIGS, options(out), executor, runs_per_job=1)
    assert [job.submission().function.configs for job in jobs] == [[c] for c in CONFIGS]
    for job, expected in zip(jobs, reference):
        [result] = job.result()
        assert_identical(result, expected)
    with pytest.raises(ValueError, match="runs_per_job"):
        cluster.submit(CONFIGS, options(out), executor, runs_per_job=0)


def test_a_job_that_sees_other_data_refuses_to_train(tmp_path, monkeypatch):
    keys, datasets = cluster._data_and_keys(GROUP_B, None)
    job = cluster.GroupJob(GROUP_B, ["another-key"], datasets, options(tmp_path))
    forbid_training(monkeypatch)
    with pytest.raises(RuntimeError, match="other data"):
        job()
    assert not any(tmp_path.iterdir())


def test_a_job_requeues_itself_and_pickles(tmp_path):
    pytest.importorskip("submitit")
    keys, datasets = cluster._data_and_keys(GROUP_A, None)
    job = cluster.GroupJob(GROUP_A, keys, datasets, options(str(tmp_path)))
    again = pickle.loads(pickle.dumps(job))
    assert again.configs == GROUP_A and again.keys == keys
    delayed = job.checkpoint()
    assert delayed.function is job and delayed.args == () and delayed.kwargs == {}
    assert "Backprop" in repr(job) and "2 runs" in repr(job)


def test_submit_refuses_bad_arguments(tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.DebugExecutor(folder=tmp_path / "jobs")
    with pytest.raises(ValueError, match="out_dir"):
        cluster.submit(CONFIGS, RunOptions(), executor)
    with pytest.raises(TypeError, match="executor"):
        cluster.submit(CONFIGS, options(tmp_path))
    with pytest.raises(TypeError, match="one experiment"):
        cluster.submit(
            CONFIGS + [ContinualImageNet(data="digits")], options(tmp_path), executor
        )
    with pytest.raises(ValueError, match="step_size"):
        cluster.submit([mnist(step_size=-1.0)], options(tmp_path), executor)
    with pytest.raises(ValueError, match="no configs"):
        cluster.submit([], options(tmp_path), executor)
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())


# ------------------------------------------------------------------------ Slurm
def fake_command(folder, name, script):
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_slurm_executor_writes_the_sbatch_script(tmp_path, monkeypatch):
    """With stand-ins for srun and sbatch (which keeps the scripts it is given)."""
    pytest.importorskip("submitit")
    path = os.environ.get("PATH", "")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(RuntimeError, match="LocalExecutor"):  # not on a cluster
        cluster.slurm_executor(tmp_path / "logs")

    bin_dir, sent = tmp_path / "bin", tmp_path / "sent"
    bin_dir.mkdir()
    sent.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{path}")
    fake_command(bin_dir, "srun", "exit 0\n")
    fake_command(
        bin_dir,
        "sbatch",
        f"n=$(ls {sent} | wc -l); id=$((4242 + n))\n"
        f'cp "$1" {sent}/$id.sh\n'
        'echo "Submitted batch job $id"\n',
    )
    executor = cluster.slurm_executor(
        tmp_path / "logs", slurm_partition="gpu", timeout_min=90, max_requeues=7
    )
    jobs = cluster.submit(CONFIGS, options(tmp_path / "out"), executor)
    assert [job.job_id for job in jobs] == ["4242", "4243"]
    for job in jobs:
        script = (sent / f"{job.job_id}.sh").read_text()
        for flag in [
            "--partition=gpu",
            "--gpus-per-node=1",
            "--time=90",
            "--cpus-per-task=2",
            "--job-name=lopbook",
            "--signal=USR2@",
        ]:
            assert f"#SBATCH {flag}" in script, script
        assert (tmp_path / "logs" / f"{job.job_id}_submitted.pkl").exists()
    assert executor._executor.max_num_timeout == 7
