"""The experiment runner: groups of runs, trained in lockstep, saved and resumed.

:func:`run` takes configs of one experiment and a :class:`RunOptions` and returns one
:class:`~lopbook.results.RunResult` per config. Runs that share a network and an
optimiser (any seeds, step sizes, methods or hyperparameters) train together in one
:class:`~lopbook.engine.Lockstep`; other groups train side by side in worker
processes, one per CPU core.

With ``out_dir`` every run lives in its own directory, named by its settings *and the
data it is trained on* (a run is never reused for other data). A checkpoint is written
every ``checkpoint_every`` seconds, also in the middle of a task, and after the last
task; running again loads finished runs and resumes the others from their checkpoint,
with the same numbers as an uninterrupted run. Files are written atomically and each
run directory is locked while a process trains it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import time
from queue import Empty
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .configs import config_from_dict, run_key
from .data import DataWarning
from .io import RunLocked, atomic_write, locked
from .metrics import PlasticityMetrics, plasticity_metrics
from .results import RunResult, load_result, save_result
from .runtime import environment, get_device

__all__ = ["RunOptions", "run", "Data", "run_directory", "lockstep_groups"]

#: the class of the runner's progress bars: tqdm.auto's (a widget in Jupyter, text in a
#: terminal); :func:`lopbook.book.setup` swaps in a widget that leaves one line of text
#: when it closes, which is what an executed notebook (and the HTML book) then shows
progress_bar = tqdm


@dataclass
class RunOptions:
    """How to run experiments (none of it changes their numbers)."""

    out_dir: str | os.PathLike | None = None
    """save results and checkpoints here and resume from them (None: keep nothing)"""
    data_dir: str | os.PathLike | None = None
    """where the data are (None: the experiment's environment variable, else download,
    else the fallback with a warning)"""
    device: str | None = None
    """'cpu', 'cuda' or None (CUDA when present)"""
    backend: str = "auto"
    """'auto' (the lockstep engine where it applies), 'engine' or 'reference'"""
    workers: int | None = None
    """groups trained at the same time, each in its own process (None: one per CPU
    core, one at a time on a GPU)"""
    progress: bool = True
    """show progress bars"""
    checkpoint_every: float = 60.0
    """seconds between checkpoints (at a step boundary, also inside a task)"""

    def check(self) -> None:
        if self.backend not in ("auto", "engine", "reference"):
            raise ValueError(
                f"backend must be 'auto', 'engine' or 'reference', got {self.backend!r}"
            )
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not self.checkpoint_every >= 0:
            raise ValueError(
                f"checkpoint_every must be >= 0 seconds, got {self.checkpoint_every}"
            )


@dataclass
class Data:
    """An experiment's data, loaded once for all its runs."""

    content: object
    identity: str
    """stable and unique to the bytes of the data set (part of every run's key)"""
    meta: dict = field(default_factory=dict)
    """recorded in every result: dataset (its name), dataset_id, dataset_warning"""


# ----------------------------------------------------------------------------------
# trainers
class Reference:
    """Runs trained one after the other with the reference learners (the engine's
    interface)."""

    def __init__(self, learners, device):
        self.learners, self.device, self.R = learners, device, len(learners)

    def train_online(self, x, y):
        regression = y.is_floating_point()  # squared errors instead of correct counts
        total = torch.zeros(
            self.R, dtype=y.dtype if regression else torch.long, device=self.device
        )
        for r, learner in enumerate(self.learners):
            for i in range(x.shape[1]):
                _, out = learner.learn(x[r, i : i + 1], y[r, i : i + 1])
                if regression:
                    total[r] += (out[0, 0] - y[r, i]).square()
                else:
                    total[r] += (out.argmax(dim=-1) == y[r, i : i + 1]).sum()
        return total

    def train_batch(self, x, y):
        return torch.stack(
            [
                (learner.learn(x[r], y[r])[1].argmax(-1) == y[r]).sum()
                for r, learner in enumerate(self.learners)
            ]
        )

    @torch.no_grad()
    def evaluate(self, x, y, batch_size=1000):
        correct = torch.zeros(self.R, dtype=torch.long, device=self.device)
        for r, learner in enumerate(self.learners):
            learner.net.eval()
            for i in range(0, x.shape[1], batch_size):
                out = learner.net(x[r, i : i + batch_size])
                correct[r] += (out.argmax(-1) == y[r, i : i + batch_size]).sum()
            learner.net.train()
        return correct

    def metrics(self, probe):
        return [
            plasticity_metrics(learner.net, probe[r])
            for r, learner in enumerate(self.learners)
        ]

    @torch.no_grad()
    def reset_head(self):
        for learner in self.learners:
            learner.net.reset_output()
            for p in learner.net.output.parameters():
                for buffer in learner.optimizer.state.get(p, {}).values():
                    if isinstance(buffer, torch.Tensor) and buffer.shape == p.shape:
                        buffer.zero_()

    def run_state(self, r):
        return self.learners[r].state_dict()

    def load_run_state(self, r, state):
        self.learners[r].load_state_dict(state)


def make_trainer(configs, nets, backend: str, device):
    """The lockstep engine (or the reference learners) for a group of runs."""
    from .engine import Lockstep

    supported = all(Lockstep.supports(n) for n in nets)
    if backend == "auto":
        backend = "engine" if supported else "reference"
    if backend == "engine":
        if not supported:
            raise ValueError(
                "the lockstep engine supports no normalisation but layer norm in "
                "the MLP; use backend='reference'"
            )
        c = configs[0]
        trainer = Lockstep(
            nets,
            [cfg.run_settings() for cfg in configs],
            optimizer=c.optimizer,
            betas=tuple(c.betas),
            device=device,
            loss=c.LOSS,
        )
    else:
        trainer = Reference(
            [cfg.learner(net.to(device)) for cfg, net in zip(configs, nets)], device
        )
    return trainer, backend


@contextlib.contextmanager
def _cpu_threads(n: int | None):
    """One-example steps are dominated by per-call overhead: on the CPU one thread is
    fastest, and far more robust to other work on the machine than several threads."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------- one
# run
class Run:
    """Book-keeping of one run: its partial results and where they are saved."""

    def __init__(self, config, key: str, out_dir, meta: dict):
        self.config = config
        self.key = key
        self.dir = Path(out_dir) / key if out_dir is not None else None
        self.accuracy, self.train_accuracy, self.metrics = [], [], []
        self.meta = dict(meta)
        self.wall_time = 0.0
        self.state = None  # the trainer's state of this run, from a checkpoint
        self.position = (
            None  # where inside a task the checkpoint was made (None: at a boundary)
        )
        self.seen = None  # the saved files as load() found them (see _stamp)

    @property
    def task(self) -> int:
        """The task the run is at."""
        return len(self.accuracy)

    def _same(self, saved_config: dict, origin: Path) -> None:
        wanted = {
            k: v for k, v in dataclasses.asdict(self.config).items() if k != "label"
        }
        theirs = config_from_dict(type(self.config).__name__, saved_config)
        theirs = {k: v for k, v in dataclasses.asdict(theirs).items() if k != "label"}
        if theirs != wanted:
            differ = sorted(k for k in wanted if wanted[k] != theirs.get(k))
            raise ValueError(
                f"{origin} holds a run with other settings ({', '.join(differ)} "
                "differ: a default of the code changed?); delete that directory "
                "or use another out_dir"
            )

    def load(self) -> RunResult | None:
        """The finished result, or (loaded into self) the last checkpoint, if any."""
        if self.dir is None:
            return None
        self.seen = _stamp(self.dir)  # before reading: a later change is noticed
        checkpoint = self.dir / "checkpoint.pt"
        if (self.dir / "result.json").exists():
            result = load_result(self.dir)
            self._same(dataclasses.asdict(result.config), self.dir / "result.json")
            if result.meta.get("dataset_id") != self.meta.get("dataset_id"):
                raise ValueError(
                    f"{self.dir} was trained on other data "
                    f"({result.meta.get('dataset')}); delete it"
                )
            if result.complete:
                # killed between the last two writes (or another process is there)
                checkpoint.unlink(missing_ok=True)
                result.config = self.config  # the same run, perhaps under another label
                return result
        if checkpoint.exists():
            try:
                saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
                config = saved["config"]
                accuracy, train_accuracy = saved["accuracy"], saved["train_accuracy"]
                metrics = [(t, PlasticityMetrics(**m)) for t, m in saved["metrics"]]
                wall_time, state = saved["wall_time"], saved["state"]
                position = saved["position"]
            except Exception as err:  # noqa: BLE001 - any unreadable file
                raise ValueError(
                    f"{checkpoint} cannot be read ({type(err).__name__}: {err}); "
                    "delete it to train the run again from its start"
                ) from None
            self._same(config, checkpoint)
            self.accuracy, self.train_accuracy = accuracy, train_accuracy
            self.metrics, self.wall_time = metrics, wall_time
            self.state, self.position = state, position
            self.meta["resumed_from"] = {
                "task": self.task,
                "position": _describe(self.position),
            }
            if self.task >= self.config.tasks:  # cut during the final save: finish it
                self.save(self.state, None)
                return self.result()
        return None

    def result(self) -> RunResult:
        metrics = {}
        if self.metrics:
            metrics["task"] = np.array([t for t, _ in self.metrics])
            for key in PlasticityMetrics.__dataclass_fields__:
                metrics[key] = np.array(
                    [getattr(m, key) for _, m in self.metrics], dtype=float
                )
        meta = dict(self.meta, wall_time_s=self.wall_time)
        return RunResult(
            self.config,
            np.array(self.accuracy, dtype=float),
            np.array(self.train_accuracy, dtype=float),
            metrics,
            meta,
        )

    def save(self, state, position) -> None:
        """A checkpoint (``state``: the trainer's, ``position``: inside the current
        task),
        then the result; once complete, the result alone."""
        if self.dir is None:
            return
        result = self.result()
        if not result.complete:
            payload = {
                "config": dataclasses.asdict(self.config),
                "accuracy": self.accuracy,
                "train_accuracy": self.train_accuracy,
                "metrics": [(t, m.as_dict()) for t, m in self.metrics],
                "wall_time": self.wall_time,
                "state": state,
                "position": position,
            }
            atomic_write(
                self.dir / "checkpoint.pt", lambda tmp: torch.save(payload, tmp)
            )
        save_result(result, self.dir)
        if result.complete:
            (self.dir / "checkpoint.pt").unlink(missing_ok=True)


def _stamp(directory: Path) -> tuple:
    """What identifies the versions of a run's saved files (a file moved into place
    is a new inode)."""
    stamp = []
    for name in ("result.json", "checkpoint.pt"):
        try:
            info = os.stat(directory / name)
        except FileNotFoundError:
            stamp.append(None)
        else:
            stamp.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamp)


def _one(value):
    """One run's part of a position, as a CPU copy."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    return value


def _describe(position) -> str:
    if position is None:
        return "start of the task"
    return ", ".join(f"{k} {v}" for k, v in position["shared"].items())


# ----------------------------------------------------------------------------------
# groups
class Group:
    """Runs trained together: their trainer, data and the position inside the task."""

    def __init__(self, experiment, runs: list[Run], data: Data, device, backend: str):
        self.experiment, self.runs, self.data, self.device = (
            experiment,
            runs,
            data,
            device,
        )
        configs = [run.config for run in runs]
        nets = experiment.networks(configs, data)
        self.trainer, backend = make_trainer(configs, nets, backend, device)
        for r, run in enumerate(runs):
            run.meta["backend"] = backend
            if run.state is not None:
                self.trainer.load_run_state(r, run.state)
        # Where inside the task the runs are: None at a task boundary, else
        # {"shared": {...}, "runs": {name: one value per run}}; the experiment keeps it
        # up to date, and a checkpoint saves it.
        positions = [run.position for run in runs]
        self.position = (
            None
            if positions[0] is None
            else {
                "shared": positions[0]["shared"],
                "runs": {
                    k: [p["runs"][k] for p in positions] for k in positions[0]["runs"]
                },
            }
        )
        self.cache: dict = {}  # what the experiment keeps between tasks (data streams)

    @property
    def config(self):
        return self.runs[0].config

    def save(self) -> None:
        for r, run in enumerate(self.runs):
            position = (
                None
                if self.position is None
                else {
                    "shared": dict(self.position["shared"]),
                    "runs": {k: _one(v[r]) for k, v in self.position["runs"].items()},
                }
            )
            run.save(self.trainer.run_state(r), position)


def train_group(group: Group, options: RunOptions, bar=None, report=None) -> None:
    """Train the group's runs to the end, checkpointing every ``checkpoint_every``
    seconds."""
    cfg = group.config
    last_save = time.monotonic()
    for t in range(group.runs[0].task, cfg.tasks):
        began = time.monotonic()
        for steps in group.experiment.task(group, t):
            if bar is not None:
                bar.update(steps)
            if report is not None:
                report(steps)
            if time.monotonic() - last_save >= options.checkpoint_every:
                group.save()
                last_save = time.monotonic()
        group.position = None
        spent = time.monotonic() - began
        for run in group.runs:
            run.wall_time += spent / len(group.runs)
        if bar is not None:
            bar.set_postfix(
                task=f"{t + 1}/{cfg.tasks}",
                accuracy=f"{np.mean([r.accuracy[-1] for r in group.runs]):.3f}",
            )
        if (
            t == cfg.tasks - 1
            or time.monotonic() - last_save >= options.checkpoint_every
        ):
            group.save()
            last_save = time.monotonic()


def _train_here(experiment, group_runs, data, options, device, position=0, report=None):
    """Train one group in this process (one CPU thread; denormals flushed)."""
    # Adam's second moments of unused weights decay into denormal floats, which a CPU
    # handles up to a hundred times more slowly; flushing them to zero changes nothing
    # measurable.
    torch.set_flush_denormal(True)
    try:
        with (
            _cpu_threads(1 if device.type == "cpu" else None),
            contextlib.ExitStack() as stack,
        ):
            for run in group_runs:
                if run.dir is not None:
                    stack.enter_context(locked(run.dir))
                    if run.seen is not None and _stamp(run.dir) != run.seen:
                        raise RunLocked(
                            f"{run.dir} was saved by another process after this one "
                            "loaded it; run again to load (or resume) what it saved"
                        )
            group = Group(experiment, group_runs, data, device, options.backend)
            total = experiment.steps_per_task(group.config, data) * group.config.tasks
            done = _steps_done(experiment, group)
            bar = None
            if options.progress and report is None:
                bar = progress_bar(
                    total=total,
                    initial=done,
                    unit="step",
                    unit_scale=True,
                    position=position,
                    desc=experiment.describe(group_runs, data),
                )
            try:
                train_group(group, options, bar, report)
            finally:
                if bar is not None:
                    bar.close()
    finally:
        torch.set_flush_denormal(False)
    return [run.result() for run in group_runs]


def _steps_done(experiment, group) -> int:
    done = group.runs[0].task * experiment.steps_per_task(group.config, group.data)
    if group.position is not None:
        done += group.position["shared"].get("steps", 0)
    return done


# ---------------------------------------------------------------------------------- the
# runner
def run(configs, options: RunOptions | None = None, **overrides) -> list[RunResult]:
    """Run every config (all of one experiment) and return their results, in order.

    ``overrides`` are fields of :class:`RunOptions` (``run(configs,
    out_dir="results")``).
    """
    options = dataclasses.replace(options or RunOptions(), **overrides)
    options.check()
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
    experiment = experiment_of(kind)
    device = get_device(options.device)
    env = environment(device)

    data: dict[str, Data] = {}
    for cfg in configs:
        if cfg.data not in data:
            data[cfg.data] = experiment.load_data(cfg, device, options.data_dir)
    keys = [run_key(cfg, data[cfg.data].identity) for cfg in configs]
    if len(set(keys)) != len(keys):
        raise ValueError(
            "two configs describe the same run (same settings, seed and data); "
            "give them different seeds"
        )

    results: dict[int, RunResult] = {}
    jobs = []  # (indices, runs, data): the runs of one group at one point of training
    for members in lockstep_groups(configs):
        shared = data[configs[members[0]].data]
        pending: dict[tuple, list[tuple[int, Run]]] = {}
        for i in members:
            run_ = Run(configs[i], keys[i], options.out_dir, dict(env, **shared.meta))
            finished = run_.load()
            if finished is not None:
                results[i] = finished
            else:
                at = (run_.task, repr(run_.position and run_.position["shared"]))
                pending.setdefault(at, []).append((i, run_))
        for _, items in sorted(pending.items()):
            jobs.append(([i for i, _ in items], [r for _, r in items], shared))

    workers = options.workers
    if (
        workers is None
    ):  # the CPU's cores side by side; one GPU takes one group at a time
        workers = 1 if device.type == "cuda" else os.cpu_count() or 1
    jobs = split_jobs(jobs, workers, experiment)
    workers = min(workers, len(jobs))
    if workers <= 1 or len(jobs) <= 1:
        for k, (indices, group_runs, shared) in enumerate(jobs):
            for i, result in zip(
                indices, _train_here(experiment, group_runs, shared, options, device)
            ):
                results[i] = result
    else:
        for indices, job_results in _in_processes(
            kind, experiment, jobs, options, device, workers
        ):
            for i, result in zip(indices, job_results):
                results[i] = result
    return [results[i] for i in range(len(configs))]


#: a lockstep step's cost that does not grow with its runs, in runs' worth (measured on
#: the CPU: the per-run part dominates from a few runs on)
STEP_OVERHEAD_RUNS = 2


def job_cost(job, experiment) -> float:
    """A job's estimated cost: its steps left times what a step of its runs costs
    (each run weighted by its method's ``step_cost`` and the network's size, when the
    experiment estimates it), plus a per-step overhead."""
    from .methods import get as method_class

    indices, runs_, shared = job
    cfg = runs_[0].config
    steps = (cfg.tasks - runs_[0].task) * experiment.steps_per_task(cfg, shared)
    size = getattr(experiment, "relative_step_cost", lambda c: 1.0)(cfg)
    per_step = STEP_OVERHEAD_RUNS + sum(
        method_class(r.config.method).step_cost for r in runs_
    )
    return steps * size * per_step


def makespan(costs, workers: int) -> float:
    """When the last worker is done if each job goes to the least busy worker,
    costliest first."""
    loads = [0.0] * workers
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return max(loads)


def split_jobs(jobs: list, workers: int, experiment) -> list:
    """The jobs, costliest first, after splitting the costliest in halves for as long
    as that lets the workers finish sooner (:func:`makespan` of :func:`job_cost`), so
    that no core idles while another finishes a big group. A run's numbers do not
    depend on which runs share its lockstep group (tested), so this changes only the
    time taken."""
    jobs = list(jobs)
    if workers <= 1:
        return jobs

    def cost(job):
        return job_cost(job, experiment)

    while len(jobs) < 8 * workers:
        splittable = [job for job in jobs if len(job[0]) > 1]
        if not splittable:
            break
        job = max(splittable, key=cost)
        indices, group_runs, shared = job
        half = len(indices) // 2
        halves = [
            (indices[:half], group_runs[:half], shared),
            (indices[half:], group_runs[half:], shared),
        ]
        rest = [j for j in jobs if j is not job]
        before = makespan([cost(j) for j in jobs], workers)
        after = makespan([cost(j) for j in rest + halves], workers)
        if after >= before:
            break
        jobs = rest + halves
    return sorted(jobs, key=cost, reverse=True)


def lockstep_groups(configs) -> list[list[int]]:
    """The indices of ``configs`` that can train together in one lockstep group (equal
    ``group_key()``: the same network and optimiser), group by group, in order."""
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(cfg.group_key(), []).append(i)
    return list(groups.values())


def run_directory(config, out_dir, data_dir=None) -> Path:
    """Where run ``config`` is saved under ``out_dir`` (its key needs the data's
    identity,
    so the data are loaded)."""
    config.validate()
    experiment = experiment_of(type(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = experiment.load_data(config, torch.device("cpu"), data_dir)
    return Path(out_dir) / run_key(config, data.identity)


def experiment_of(kind):
    """The experiment module that trains configs of class ``kind``."""
    from .experiments import EXPERIMENTS

    if kind.__name__ not in EXPERIMENTS:
        raise TypeError(
            f"{kind.__name__} is not an experiment's config; known: "
            f"{', '.join(EXPERIMENTS)}"
        )
    return EXPERIMENTS[kind.__name__]


_PROGRESS = None  # a worker process's queue of progress reports to its parent


def _start_worker(progress, parent: int) -> None:
    """Every worker process first: keep the parent's progress queue, and stop when the
    parent is gone (killed, say; the last checkpoint is kept and no orphan keeps the
    CPU busy)."""
    import threading

    global _PROGRESS
    _PROGRESS = progress

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _job_in_process(kind_name, configs, keys, options, device, position):
    """A group in a worker process: load its data and checkpoints, train, return."""
    from .experiments import EXPERIMENTS

    experiment = EXPERIMENTS[kind_name]
    device = torch.device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the parent process has warned
        data = experiment.load_data(configs[0], device, options.data_dir)
    env = environment(device)
    group_runs = [
        Run(cfg, key, options.out_dir, dict(env, **data.meta))
        for cfg, key in zip(configs, keys)
    ]
    for run_ in group_runs:
        if run_.load() is not None:
            raise RunLocked(
                f"{run_.dir} was finished by another process meanwhile; run again to "
                "load it"
            )
    return _train_here(
        experiment,
        group_runs,
        data,
        options,
        device,
        report=lambda steps: _PROGRESS.put((position, steps)),
    )


def _in_processes(kind, experiment, jobs, options, device, workers):
    """Train the jobs in worker processes, one group each, with one progress bar per
    group."""
    import multiprocessing

    context = multiprocessing.get_context(
        "spawn"
    )  # safe with threads, notebooks and CUDA
    queue = context.Queue()
    with concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(queue, os.getpid()),
    ) as pool:
        bars = []
        for k, (_, group_runs, shared) in enumerate(jobs):
            cfg = group_runs[0].config
            steps = experiment.steps_per_task(cfg, shared)
            done = group_runs[0].task * steps
            if group_runs[0].position is not None:
                done += group_runs[0].position["shared"].get("steps", 0)
            bars.append(
                progress_bar(
                    total=steps * cfg.tasks,
                    initial=done,
                    unit="step",
                    unit_scale=True,
                    position=k,
                    disable=not options.progress,
                    desc=experiment.describe(group_runs, shared),
                )
            )
        futures = {
            pool.submit(
                _job_in_process,
                kind.__name__,
                [r.config for r in group_runs],
                [r.key for r in group_runs],
                options,
                str(device),
                k,
            ): indices
            for k, (indices, group_runs, _) in enumerate(jobs)
        }
        try:
            waiting = set(futures)
            while waiting:
                done, waiting = concurrent.futures.wait(waiting, timeout=0.5)
                while True:
                    try:
                        k, steps = queue.get_nowait()
                    except Empty:
                        break
                    bars[k].update(steps)
                for future in done:
                    yield futures[future], future.result()
        except BaseException:
            for future in futures:
                # queued groups do not start; running ones keep checkpoints
                future.cancel()
            raise
        finally:
            for bar in bars:
                bar.close()
