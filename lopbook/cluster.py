"""Training a chapter's runs on a cluster: one job per lockstep group, with submitit.

A full-scale chapter is tens of GPU-hours. :func:`submit` sends every lockstep group of
a list of configs (the runs that :func:`lopbook.runner.run` trains together) to a
`submitit <https://github.com/facebookincubator/submitit>`_ executor as one job. The
jobs save their runs in the same content-addressed ``out_dir`` as the runner (one
directory per run, named by its settings and data), so running the chapter (or
:func:`~lopbook.runner.run`) afterwards with that ``out_dir`` loads what they saved
instead of training it::

    executor = slurm_executor("submitit-logs", slurm_partition="gpu", timeout_min=720)
    jobs = submit(configs, RunOptions(out_dir="results/permuted_mnist"), executor)
    results = [r for job in jobs for r in job.result()]  # waits for the jobs

Groups whose runs are all finished are not submitted; a job resumes its runs from their
checkpoints, and before a Slurm time limit or a preemption it is requeued and resumes
again. submitit is optional (``pip install 'lopbook[cluster]'``); its ``LocalExecutor``
runs the same jobs as processes on this machine.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from . import runner
from .configs import run_key
from .results import RunResult, load_result

__all__ = ["submit", "slurm_executor", "GroupJob"]

#: lopbook's defaults for a job on Slurm (any of them can be given to slurm_executor)
SLURM_DEFAULTS = {
    "name": "lopbook",
    "nodes": 1,
    "tasks_per_node": 1,
    "gpus_per_node": 1,
    "cpus_per_task": 2,  # one process trains a group, with one thread on a CPU
    "timeout_min": 6 * 60,
}


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError(
            "lopbook.cluster needs submitit: pip install 'lopbook[cluster]' "
            "(or pip install submitit)"
        ) from None
    return submitit


def slurm_executor(folder, *, max_requeues: int = 20, **parameters):
    """A submitit executor that submits jobs to Slurm.

    ``folder`` receives the jobs' pickles and logs (``%j`` is replaced by the job id).
    ``parameters`` are submitit's (``timeout_min``, ``gpus_per_node``,
    ``cpus_per_task``, ``mem_gb``, ``name``, ...) and Slurm's own with a ``slurm_``
    prefix (``slurm_partition``, ``slurm_account``, ``slurm_qos``,
    ``slurm_additional_parameters={...}``, ``slurm_setup=["module load cuda"]``);
    they replace :data:`SLURM_DEFAULTS` (one GPU, two CPUs, six hours). A job that
    reaches its time limit is requeued, at most ``max_requeues`` times, and resumes
    from its runs' checkpoints.
    """
    submitit = _submitit()
    try:
        executor = submitit.AutoExecutor(
            folder=folder, cluster="slurm", slurm_max_num_timeout=max_requeues
        )
    except RuntimeError as err:  # no srun here
        raise RuntimeError(
            f"{err} (to run the same jobs on this machine, pass "
            "submitit.LocalExecutor(folder) to lopbook.cluster.submit)"
        ) from None
    executor.update_parameters(**dict(SLURM_DEFAULTS, **parameters))
    return executor


def _data_and_keys(configs, data_dir) -> tuple[list[str], dict[str, str]]:
    """The run keys of ``configs`` and the name of each data set they use (loaded here
    on the CPU, each once)."""
    experiment = runner.experiment_of(type(configs[0]))
    data = {}
    for cfg in configs:
        if cfg.data not in data:
            data[cfg.data] = experiment.load_data(cfg, torch.device("cpu"), data_dir)
    keys = [run_key(cfg, data[cfg.data].identity) for cfg in configs]
    return keys, {k: d.meta.get("dataset", k) for k, d in data.items()}


class GroupJob:
    """What one job runs: :func:`lopbook.runner.run` on one lockstep group's configs,
    which loads finished runs and resumes the others from their checkpoints.

    submitit calls :meth:`checkpoint` when Slurm signals the time limit or a
    preemption: the job is requeued as it is, and resumes from the runner's last
    checkpoints (at most ``checkpoint_every`` seconds old).
    """

    def __init__(self, configs, keys, datasets, options):
        self.configs, self.keys = list(configs), list(keys)
        self.datasets, self.options = dict(datasets), options

    def __call__(self) -> list[RunResult]:
        keys, datasets = _data_and_keys(self.configs, self.options.data_dir)
        if keys != self.keys:
            raise RuntimeError(
                f"this job sees other data ({datasets}) than the process that "
                f"submitted it ({self.datasets}), so its runs would not be found "
                "there; give the jobs the same data (data_dir, or LOPBOOK_DATA / "
                "LOPBOOK_IMAGENET on the nodes)"
            )
        return runner.run(self.configs, self.options)

    def checkpoint(self, *args, **kwargs):
        return _submitit().helpers.DelayedSubmission(self)

    def __repr__(self) -> str:
        names = sorted({cfg.name for cfg in self.configs})
        return f"GroupJob({', '.join(names)}: {len(self.configs)} runs)"


def submit(
    configs,
    options: runner.RunOptions | None = None,
    executor=None,
    *,
    runs_per_job: int | None = None,
    progress: bool = False,
    **overrides,
) -> list:
    """Submit one job per lockstep group of ``configs`` to ``executor``; the jobs.

    ``options`` (or its fields as keyword arguments) are the runner's; ``out_dir`` is
    required, and it and ``data_dir`` are made absolute, so that the jobs and a later
    :func:`~lopbook.runner.run` with the same ``out_dir`` (a chapter's ``out_dir``
    parameter) share the runs. Configs of the same run (the same settings, seed and
    data) are submitted once; groups whose runs are all finished in ``out_dir`` are not
    submitted, and a group's finished runs are left out of its job. ``runs_per_job``:
    split larger groups into jobs of at most that many runs (None: one job per group),
    to spread a group over GPUs. ``progress``: show progress bars in the jobs' logs
    (their updates would fill a long job's log).

    The data are loaded here once (on the CPU) for the runs' keys; every job checks
    that it sees the same data. ``job.result()`` waits for a job and returns its
    runs' :class:`~lopbook.results.RunResult` (or raises the job's error).
    """
    submitit = _submitit()
    if executor is None or not isinstance(executor, submitit.Executor):
        raise TypeError(
            "submit needs a submitit executor: lopbook.cluster.slurm_executor(folder, "
            "...) for Slurm, or submitit.LocalExecutor(folder) for this machine"
        )
    options = dataclasses.replace(options or runner.RunOptions(), **overrides)
    options.check()
    if runs_per_job is not None and runs_per_job < 1:
        raise ValueError(f"runs_per_job must be >= 1, got {runs_per_job}")
    if options.out_dir is None:
        raise ValueError(
            "submit needs an out_dir: the jobs save their runs there, and running the "
            "chapter with that out_dir loads them"
        )
    options = dataclasses.replace(
        options,
        out_dir=os.path.abspath(options.out_dir),
        data_dir=None
        if options.data_dir is None
        else os.path.abspath(options.data_dir),
        progress=progress,
    )
    configs = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    if not configs:
        raise ValueError("no configs given")
    kind = type(configs[0])
    for cfg in configs:
        if type(cfg) is not kind:
            raise TypeError(
                f"all configs must be of one experiment: got {kind.__name__} and "
                f"{type(cfg).__name__}"
            )
        cfg.validate()
    keys, datasets = _data_and_keys(configs, options.data_dir)
    unique: dict = {}
    for key, cfg in zip(keys, configs):
        unique.setdefault(key, cfg)  # a run asked for twice is trained once
    keys, configs = list(unique), list(unique.values())

    jobs = []
    for members in runner.lockstep_groups(configs):
        todo = [i for i in members if not _finished(Path(options.out_dir) / keys[i])]
        size = runs_per_job or len(todo) or 1
        for start in range(0, len(todo), size):
            part = todo[start : start + size]
            group = [configs[i] for i in part]
            used = {cfg.data: datasets[cfg.data] for cfg in group}
            job = GroupJob(group, [keys[i] for i in part], used, options)
            jobs.append(executor.submit(job))
    return jobs


def _finished(directory: Path) -> bool:
    """Whether ``directory`` holds a complete result (an invalid one is an error that
    names it)."""
    return (directory / "result.json").exists() and load_result(directory).complete
