"""The paper's two experiments as functions of plain configs.

A config (:class:`PermutedMNIST`, :class:`ContinualImageNet`) describes one run: the learner, its
hyperparameters, the seed and the problem. The defaults are the paper's settings (``scale="full"``).
:func:`run_permuted_mnist` and :func:`run_continual_imagenet` take a list of them and return one
:class:`~lopbook.results.RunResult` each. Runs whose settings allow it (same network and optimiser; any
seeds, step sizes, weight decays, noise levels or replacement rates) are trained together in lockstep by
:class:`~lopbook.engine.Lockstep`; the others one by one with the reference learners.

With ``out_dir`` every run is saved atomically under its own directory, with a checkpoint at least every
``checkpoint_every`` seconds and at the end; calling again with the same configs and ``out_dir`` loads finished
runs and resumes unfinished ones from their last checkpoint, with the same final numbers as an uninterrupted run.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tqdm.auto import tqdm

from . import data as datasets
from .engine import Lockstep, RunSettings
from .learners import UTILITIES, Backprop, ContinualBackprop, ShrinkAndPerturb
from .metrics import PlasticityMetrics, plasticity_metrics
from .nets import MLP, ConvNet
from .results import RunResult, atomic_write, load_result, numbers_config, run_key, save_result
from .runtime import derive_seed, environment, get_device, make_generator

__all__ = ["PermutedMNIST", "ContinualImageNet", "run_permuted_mnist", "run_continual_imagenet", "linear_baseline",
           "runs", "ALGORITHMS", "SCALES", "resolve_scale", "settings"]

ALGORITHMS = ("backprop", "l2", "shrink_and_perturb", "continual_backprop")
SCALES = ("smoke", "quick", "full")
_NAMES = {"backprop": "Backprop", "l2": "L2", "shrink_and_perturb": "Shrink and Perturb",
          "continual_backprop": "Continual backprop"}
# fields that may differ between runs trained together in lockstep
_PER_RUN = {"algorithm", "seed", "label", "step_size", "momentum", "weight_decay", "noise_std", "replacement_rate"}


@dataclass
class _Learning:
    """The learner's settings, shared by both experiments."""

    algorithm: str = "backprop"       # backprop | l2 | shrink_and_perturb | continual_backprop
    seed: int = 0
    step_size: float = 0.003
    optimizer: str = "sgd"            # sgd | adam
    momentum: float = 0.0
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0         # L2 (also the "shrink" of Shrink-and-Perturb)
    noise_std: float = 1e-5           # Shrink-and-Perturb only
    dropout: float = 0.0
    norm: str | None = None           # None | "layer" | "batch"
    replacement_rate: float = 1e-4    # continual backprop only
    maturity_threshold: int = 100
    decay_rate: float = 0.99
    utility: str = "contribution"     # contribution | adaptable
    label: str = ""                   # name in plots; empty: made from the settings

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        name = _NAMES.get(self.algorithm, self.algorithm)
        if self.optimizer == "adam":
            name = "Adam" if self.algorithm == "backprop" else f"{name} (Adam)"
        if self.dropout:
            name += f", dropout {self.dropout:g}"
        if self.norm:
            name += f", {self.norm} norm"
        return name

    def validate(self) -> None:
        def need(ok, message):
            if not ok:
                raise ValueError(f"{type(self).__name__}({self.name}): {message}")

        need(self.algorithm in ALGORITHMS, f"unknown algorithm {self.algorithm!r}; choose one of {ALGORITHMS}")
        need(isinstance(self.seed, (int, np.integer)) and self.seed >= 0, "seed must be a non-negative integer")
        need(self.step_size > 0, f"step_size must be positive, got {self.step_size}")
        need(self.optimizer in ("sgd", "adam"), f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.optimizer == "sgd" or self.momentum == 0, "momentum is an SGD setting (Adam uses betas)")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.algorithm != "l2" or self.weight_decay > 0, "algorithm 'l2' needs weight_decay > 0")
        need(self.noise_std >= 0, f"noise_std must be >= 0, got {self.noise_std}")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.norm in (None, "layer", "batch"), f"norm must be None, 'layer' or 'batch', got {self.norm!r}")
        need(0 <= self.replacement_rate <= 1, f"replacement_rate must be in [0, 1], got {self.replacement_rate}")
        need(self.maturity_threshold >= 0, "maturity_threshold must be >= 0")
        need(0 <= self.decay_rate < 1, f"decay_rate must be in [0, 1), got {self.decay_rate}")
        need(self.utility in UTILITIES, f"utility must be one of {UTILITIES}, got {self.utility!r}")
        need(self.tasks >= 1, f"tasks must be >= 1, got {self.tasks}")
        need(self.metrics_every >= 0, "metrics_every must be >= 0 (0: never)")
        need(self.probe_size >= 1, "probe_size must be >= 1")

    def run_settings(self) -> RunSettings:
        return RunSettings(
            seed=derive_seed(self.seed, 1), step_size=self.step_size, momentum=self.momentum,
            weight_decay=self.weight_decay,
            noise_std=self.noise_std if self.algorithm == "shrink_and_perturb" else 0.0,
            replacement_rate=self.replacement_rate if self.algorithm == "continual_backprop" else 0.0)

    def learner(self, net):
        """The reference learner for this config (:mod:`lopbook.learners`)."""
        common = dict(optimizer=self.optimizer, betas=self.betas, weight_decay=self.weight_decay,
                      seed=derive_seed(self.seed, 1))
        if self.optimizer == "sgd":
            common["momentum"] = self.momentum
        if self.algorithm == "shrink_and_perturb":
            return ShrinkAndPerturb(net, self.step_size, noise_std=self.noise_std, **common)
        if self.algorithm == "continual_backprop":
            return ContinualBackprop(net, self.step_size, replacement_rate=self.replacement_rate,
                                     maturity_threshold=self.maturity_threshold, decay_rate=self.decay_rate,
                                     utility=self.utility, **common)
        return Backprop(net, self.step_size, **common)

    def group_key(self) -> tuple:
        """Runs with equal keys can be trained together in lockstep."""
        return tuple((k, v) for k, v in sorted(dataclasses.asdict(self).items()) if k not in _PER_RUN)


@dataclass
class PermutedMNIST(_Learning):
    """One run of Online Permuted MNIST. Defaults: the paper's setting (800 tasks of 60,000 examples, one at a
    time, network 784-2000-2000-2000-10, step size 0.003).

    ``data``: ``"auto"`` (MNIST's training split if available, else its test split, else scikit-learn's 8x8
    digits with a warning), ``"train"``, ``"test"`` or ``"digits"``.
    """

    tasks: int = 800
    examples_per_task: int = 60_000
    width: int = 2000
    depth: int = 3
    metrics_every: int = 1            # measure the plasticity metrics at the start of every k-th task (0: never)
    probe_size: int = 2000
    data: str = "auto"

    def validate(self) -> None:
        super().validate()
        if self.examples_per_task < 1 or self.width < 1 or self.depth < 1:
            raise ValueError(f"PermutedMNIST({self.name}): examples_per_task, width and depth must be >= 1")
        if self.data not in ("auto", "train", "test", "digits"):
            raise ValueError(f"PermutedMNIST: data must be 'auto', 'train', 'test' or 'digits', got {self.data!r}")
        if self.norm == "batch":
            raise ValueError("PermutedMNIST learns from one example at a time, where batch norm is undefined; "
                             "use norm='layer'")


@dataclass
class ContinualImageNet(_Learning):
    """One run of Continual ImageNet: binary tasks on pairs of classes, the output layer reset at each task.
    Defaults: the paper's setting (2,000 tasks, 250 epochs of mini-batches of 100, SGD with momentum 0.9).

    ``data``: ``"auto"`` (ImageNet 32x32 if ``$LOPBOOK_IMAGENET`` or ``data_dir`` is given, else CIFAR-100,
    else MNIST digits as classes, with a warning), ``"imagenet"``, ``"cifar100"`` or ``"digits"``.
    """

    step_size: float = 0.01
    momentum: float = 0.9
    tasks: int = 2000
    epochs: int = 250
    batch_size: int = 100
    train_per_class: int = 0          # use only the first k training images of each class (0: all, 600 for ImageNet)
    test_per_class: int = 0           # likewise for the test images (0: all, 100 for ImageNet)
    metrics_every: int = 0
    probe_size: int = 1000
    data: str = "auto"

    def validate(self) -> None:
        super().validate()
        if self.train_per_class < 0 or self.test_per_class < 0:
            raise ValueError("train_per_class and test_per_class must be >= 0 (0: all the images)")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"ContinualImageNet({self.name}): epochs and batch_size must be >= 1")
        if self.data not in ("auto", "imagenet", "cifar100", "digits"):
            raise ValueError("ContinualImageNet: data must be 'auto', 'imagenet', 'cifar100' or 'digits', "
                             f"got {self.data!r}")
        if self.norm == "layer":
            raise ValueError("the ConvNet supports norm=None or 'batch'")


def runs(config, n: int, first_seed: int = 0) -> list:
    """``n`` copies of ``config`` with seeds ``first_seed, first_seed + 1, ...``."""
    return [dataclasses.replace(config, seed=first_seed + i) for i in range(n)]


def settings(scale: str, given: dict, **presets: dict) -> SimpleNamespace:
    """A notebook's settings: the preset of the (resolved) scale, overridden by every ``given`` value not None.

    >>> P = settings("quick", dict(tasks=None, runs=3), quick=dict(tasks=60, runs=2), full=dict(tasks=800, runs=30))
    >>> P.scale, P.tasks, P.runs
    ('quick', 60, 3)
    """
    scale = resolve_scale(scale)
    if scale not in presets:
        raise ValueError(f"no settings for scale {scale!r}; this notebook has {sorted(presets)}")
    values = dict(presets[scale])
    values.update({k: v for k, v in given.items() if v is not None})
    return SimpleNamespace(scale=scale, **values)


def resolve_scale(scale: str) -> str:
    """The scale to run at: ``$LOPBOOK_SCALE`` when set (the tests use ``smoke``), else ``scale``."""
    scale = os.environ.get("LOPBOOK_SCALE") or scale
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


# ---------------------------------------------------------------------------------------------- trainers
class _Reference:
    """Runs trained one after the other with the reference learners (same interface as the engine)."""

    def __init__(self, learners, device):
        self.learners, self.device, self.R = learners, device, len(learners)

    def train_online(self, x, y):
        correct = torch.zeros(self.R, dtype=torch.long, device=self.device)
        for r, learner in enumerate(self.learners):
            for i in range(x.shape[1]):
                _, out = learner.learn(x[r, i:i + 1], y[r, i:i + 1])
                correct[r] += (out.argmax(dim=-1) == y[r, i:i + 1]).sum()
        return correct

    def train_batch(self, x, y):
        return torch.stack([(l.learn(x[r], y[r])[1].argmax(-1) == y[r]).sum() for r, l in enumerate(self.learners)])

    @torch.no_grad()
    def evaluate(self, x, y, batch_size=1000):
        correct = torch.zeros(self.R, dtype=torch.long, device=self.device)
        for r, learner in enumerate(self.learners):
            learner.net.eval()
            for i in range(0, x.shape[1], batch_size):
                correct[r] += (learner.net(x[r, i:i + batch_size]).argmax(-1) == y[r, i:i + batch_size]).sum()
            learner.net.train()
        return correct

    def metrics(self, probe):
        return [plasticity_metrics(l.net, probe[r]) for r, l in enumerate(self.learners)]

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


@contextlib.contextmanager
def _cpu_threads(n: int | None):
    """One-example steps are dominated by per-call overhead: on the CPU one thread is fastest, and it is far more
    robust to other work on the machine than several threads waiting for each other."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _make_trainer(runs_, nets, backend, device):
    """The engine (or the reference learners) for a group of runs, each restored from its checkpoint if it has one."""
    configs = [run.config for run in runs_]
    supported = all(Lockstep.supports(n) for n in nets)
    if backend == "auto":
        backend = "engine" if supported else "reference"
    if backend == "engine":
        if not supported:
            raise ValueError("the lockstep engine supports no normalisation but layer norm in the MLP; "
                             "use backend='reference'")
        c = configs[0]
        trainer = Lockstep(nets, [cfg.run_settings() for cfg in configs], optimizer=c.optimizer, betas=c.betas,
                           maturity_threshold=c.maturity_threshold, decay_rate=c.decay_rate, utility=c.utility,
                           device=device)
    elif backend == "reference":
        trainer = _Reference([cfg.learner(net.to(device)) for cfg, net in zip(configs, nets)], device)
    else:
        raise ValueError(f"backend must be 'auto', 'engine' or 'reference', got {backend!r}")
    for r, run in enumerate(runs_):
        run.meta["backend"] = backend
        if run.state is not None:
            trainer.load_run_state(r, run.state)
    return trainer


# ---------------------------------------------------------------------------------------------- the runner
class _Run:
    """Book-keeping of one run during an experiment: its partial results and where they are saved."""

    def __init__(self, config, out_dir, meta):
        self.config = config
        self.dir = Path(out_dir) / run_key(config) if out_dir is not None else None
        self.accuracy, self.train_accuracy, self.metrics = [], [], []
        self.meta = dict(meta)
        self.wall_time = 0.0
        self.state = None

    def load(self):
        """Finished result, or the last checkpoint of an unfinished run, if any."""
        if self.dir is None:
            return None
        wanted = numbers_config(self.config)
        has_checkpoint = (self.dir / "checkpoint.pt").exists()
        if (self.dir / "result.json").exists():
            try:
                result = load_result(self.dir)
            except ValueError:
                if not has_checkpoint:
                    raise
                result = None      # a save was cut between arrays.npz and result.json: the checkpoint came first
            if result is not None and numbers_config(result.config) != wanted:
                raise ValueError(f"{self.dir} holds a different run; remove it or use another out_dir")
            if result is not None and result.complete and not has_checkpoint:
                result.config = self.config          # the same run, perhaps under another label
                return result
        if has_checkpoint:
            saved = torch.load(self.dir / "checkpoint.pt", map_location="cpu", weights_only=False)
            if {k: v for k, v in saved["config"].items() if k != "label"} != wanted:
                raise ValueError(f"{self.dir} holds a different run; remove it or use another out_dir")
            self.accuracy, self.train_accuracy = saved["accuracy"], saved["train_accuracy"]
            self.metrics, self.wall_time, self.state = saved["metrics"], saved["wall_time"], saved["state"]
            self.meta["resumed_from_task"] = len(self.accuracy)
            if len(self.accuracy) >= self.config.tasks:      # cut during the final save: finish it
                self.save(self.state)
                return self.result()
        return None

    def result(self) -> RunResult:
        metrics = {}
        if self.metrics:
            metrics["task"] = np.array([t for t, _ in self.metrics])
            for key in PlasticityMetrics.__dataclass_fields__:
                metrics[key] = np.array([getattr(m, key) for _, m in self.metrics], dtype=float)
        meta = dict(self.meta, wall_time_s=self.wall_time)
        return RunResult(self.config, np.array(self.accuracy, dtype=float), np.array(self.train_accuracy,
                                                                                     dtype=float), metrics, meta)

    def save(self, state):
        if self.dir is None:
            return
        payload = {"config": dataclasses.asdict(self.config), "accuracy": self.accuracy,
                   "train_accuracy": self.train_accuracy, "metrics": self.metrics, "wall_time": self.wall_time,
                   "state": state}
        atomic_write(self.dir / "checkpoint.pt", lambda tmp: torch.save(payload, tmp))
        result = self.result()
        save_result(result, self.dir)
        if result.complete:
            (self.dir / "checkpoint.pt").unlink()


def _run_experiment(configs, kind, out_dir, device, backend, progress, checkpoint_every, workers, data_dir):
    configs = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    if not configs:
        raise ValueError("no configs given")
    for cfg in configs:
        if not isinstance(cfg, kind):
            raise TypeError(f"expected {kind.__name__} configs, got {type(cfg).__name__}")
        cfg.validate()
    if len({run_key(c) for c in configs}) != len(configs):
        raise ValueError("two configs describe the same run (same settings and seed); give them different seeds")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    device = get_device(device)
    prepare, _ = _EXPERIMENTS[kind.__name__]
    env = environment(device)
    results: dict[int, RunResult] = {}
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(cfg.group_key(), []).append(i)
    data: dict[str, _Shared] = {}
    jobs = []                    # (indices of the runs trained together, their _Runs, data, the task they start at)
    for members in groups.values():
        first = configs[members[0]]
        if first.data not in data:
            data[first.data] = prepare(first, device, data_dir)         # the data, loaded once
        shared = data[first.data]
        pending: dict[int, list[tuple[int, _Run]]] = {}
        for i in members:
            run = _Run(configs[i], out_dir, dict(env, **shared.meta, backend=None))
            finished = run.load()
            if finished is not None:
                results[i] = finished
            else:
                pending.setdefault(len(run.accuracy), []).append((i, run))
        jobs += [([i for i, _ in items], [run for _, run in items], shared, start)
                 for start, items in sorted(pending.items())]

    if workers is None:          # independent groups use the CPU's cores side by side; one GPU takes one at a time
        workers = 1 if device.type == "cuda" else min(len(jobs), os.cpu_count() or 1)
    if workers <= 1 or len(jobs) <= 1:
        for indices, runs_, shared, start in jobs:
            for i, result in zip(indices, _train_group(kind.__name__, runs_, shared, start, device, backend,
                                                       progress, checkpoint_every)):
                results[i] = result
    else:
        for indices, job_results in _in_processes(kind.__name__, jobs, out_dir, data_dir, device, backend,
                                                  progress, checkpoint_every, workers):
            for i, result in zip(indices, job_results):
                results[i] = result
    return [results[i] for i in range(len(configs))]


def _train_group(kind, runs_, shared, start, device, backend, progress, checkpoint_every, position=0, report=None):
    """Train one group of runs in this process (one CPU thread; denormals flushed) and return their results."""
    _, run_group = _EXPERIMENTS[kind]
    # Adam's second-moment estimates of unused weights decay into denormal floats, which a CPU handles up to a
    # hundred times more slowly; flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    try:
        with _cpu_threads(1 if device.type == "cpu" else None):
            run_group(runs_, shared, start, device, backend, progress, checkpoint_every, position, report)
    finally:
        torch.set_flush_denormal(False)
    return [run.result() for run in runs_]


def _job_in_process(kind, configs, out_dir, data_dir, device, backend, checkpoint_every, start, position, queue):
    """A group of runs in a worker process: load its data and checkpoints again, train, return the results."""
    prepare, _ = _EXPERIMENTS[kind]
    device = torch.device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", datasets.DataWarning)         # the parent process has warned already
        shared = prepare(configs[0], device, data_dir)
    env = environment(device)
    runs_ = [_Run(cfg, out_dir, dict(env, **shared.meta, backend=None)) for cfg in configs]
    for run in runs_:
        if run.load() is not None or len(run.accuracy) != start:
            raise RuntimeError(f"{run.dir} changed while this experiment was running")
    return _train_group(kind, runs_, shared, start, device, backend, False, checkpoint_every,
                        report=lambda: queue.put(position))


def _in_processes(kind, jobs, out_dir, data_dir, device, backend, progress, checkpoint_every, workers):
    """Train the jobs in worker processes, one group each, showing one progress bar per group here."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")        # safe with threads, notebooks and CUDA alike
    with context.Manager() as manager, \
            concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        queue = manager.Queue()
        bars = [tqdm(total=runs_[0].config.tasks, initial=start, unit="task", position=k, disable=not progress,
                     desc=f"{_describe(runs_, shared)} (worker process)")
                for k, (_, runs_, shared, start) in enumerate(jobs)]
        futures = {pool.submit(_job_in_process, kind, [r.config for r in runs_], out_dir, data_dir, str(device),
                               backend, checkpoint_every, start, k, queue): indices
                   for k, (indices, runs_, _, start) in enumerate(jobs)}
        try:
            waiting = set(futures)
            while waiting:
                done, waiting = concurrent.futures.wait(waiting, timeout=0.5)
                while not queue.empty():
                    bars[queue.get()].update(1)
                for future in done:
                    yield futures[future], future.result()
        except BaseException:
            for future in futures:
                future.cancel()      # queued groups do not start; running ones stop at exit, keeping checkpoints
            raise
        finally:
            for bar in bars:
                bar.close()


def _describe(runs_, shared) -> str:
    kind = type(runs_[0].config).__name__
    name = "Permuted MNIST" if kind == "PermutedMNIST" else f"Continual ImageNet ({shared.meta['dataset']})"
    labels = sorted({r.config.name for r in runs_})
    return f"{name}: {', '.join(labels)[:60]}, {len(runs_)} run{'s' * (len(runs_) > 1)}"


def _train_tasks(runs_, trainer, start, progress, checkpoint_every, do_task, desc, position=0, report=None):
    """The loop shared by both experiments: tasks, progress bar, timing and checkpoints."""
    cfg = runs_[0].config
    last_save = time.monotonic()
    with tqdm(total=cfg.tasks, initial=start, desc=desc, disable=not progress, unit="task",
              position=position) as bar:
        for t in range(start, cfg.tasks):
            began = time.monotonic()
            do_task(t)
            spent = time.monotonic() - began
            for run in runs_:
                run.wall_time += spent / len(runs_)
            bar.update(1)
            bar.set_postfix(accuracy=f"{np.mean([r.accuracy[-1] for r in runs_]):.3f}")
            if t == cfg.tasks - 1 or time.monotonic() - last_save >= checkpoint_every:
                for r, run in enumerate(runs_):
                    run.save(trainer.run_state(r))
                last_save = time.monotonic()
            if report is not None:
                report()


def _record_metrics(runs_, trainer, t, probe):
    for run, m in zip(runs_, trainer.metrics(probe)):
        run.metrics.append((t, m))


@dataclass
class _Shared:
    data: object
    meta: dict


# ---------------------------------------------------------------------------------------------- Permuted MNIST
def _prepare_mnist(cfg: PermutedMNIST, device, data_dir=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", datasets.DataWarning)      # warned once below, at the caller's line
        if cfg.data == "digits":
            dataset = datasets.load_digits_fallback()
        else:
            split = {"auto": "auto", "train": "train", "test": "test"}[cfg.data]
            dataset = datasets.mnist_or_digits(data_dir, split=split)
    _warn_fallback(dataset.warning)
    meta = {"dataset": dataset.name, "dataset_warning": dataset.warning}
    return _Shared((dataset, dataset.x.to(device), dataset.y.to(device)), meta)


def _warn_fallback(message: str | None) -> None:
    """One loud DataWarning, attributed to the line that called the runner (a notebook cell, a script)."""
    if message:
        # stack: _warn_fallback <- _prepare_* <- _run_experiment <- run_* <- the caller
        warnings.warn(message, datasets.DataWarning, stacklevel=5)


def _run_mnist_group(runs_, shared, start, device, backend, progress, checkpoint_every, position=0, report=None,
                     chunk=1000):
    cfg = runs_[0].config
    dataset, x_all, y_all = shared.data
    streams = [datasets.PermutedMNISTStream(dataset, run.config.seed, cfg.examples_per_task) for run in runs_]
    nets = [MLP(dataset.n_features, cfg.width, cfg.depth, 10, cfg.dropout, cfg.norm, seed=run.config.seed)
            for run in runs_]
    trainer = _make_trainer(runs_, nets, backend, device)
    R = len(runs_)

    def examples(perm, order):
        x = x_all[order]                                       # [R, c, D]
        return torch.gather(x, 2, perm[:, None, :].expand(-1, order.shape[1], -1)), y_all[order]

    def do_task(t):
        perm = torch.stack([s.permutation(t) for s in streams]).to(device)
        order = torch.stack([s.order(t) for s in streams]).to(device)
        if cfg.metrics_every and t % cfg.metrics_every == 0:
            _record_metrics(runs_, trainer, t, examples(perm, order[:, :cfg.probe_size])[0])
        correct = torch.zeros(R, dtype=torch.long, device=device)
        for a in range(0, cfg.examples_per_task, chunk):
            x, y = examples(perm, order[:, a:a + chunk])
            correct += trainer.train_online(x, y)
        for run, c in zip(runs_, (correct.double() / cfg.examples_per_task).tolist()):
            run.accuracy.append(c)

    _train_tasks(runs_, trainer, start, progress, checkpoint_every, do_task, _describe(runs_, shared), position,
                 report)


def run_permuted_mnist(configs, out_dir=None, data_dir=None, device=None, backend="auto", progress=True,
                       checkpoint_every=60.0, workers=None) -> list[RunResult]:
    """Run Online Permuted MNIST for every config (a :class:`PermutedMNIST` or a list of them).

    Parameters
    ----------
    out_dir : save results and checkpoints here, and resume from them (None: keep nothing on disk).
    data_dir : MNIST directory (else ``$LOPBOOK_DATA``, else download, else the 8x8 digits with a warning).
    device : ``"cpu"``, ``"cuda"`` or None (CUDA when present).
    backend : ``"auto"`` (the lockstep engine where it applies), ``"engine"`` or ``"reference"``.
    checkpoint_every : seconds between checkpoints (one is always made after the last task).
    workers : groups of runs (different networks or optimisers) trained at the same time, each in its own process
        (None: one per CPU core, one at a time on a GPU). On the CPU every group uses one thread: one-example steps
        are too small to share between cores, and one thread per core is far more robust to other work on the
        machine than several threads waiting for each other.
    """
    return _run_experiment(configs, PermutedMNIST, out_dir, device, backend, progress, checkpoint_every, workers,
                           data_dir)


# ---------------------------------------------------------------------------------------------- Continual ImageNet
def _prepare_imagenet(cfg: ContinualImageNet, device, data_dir=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", datasets.DataWarning)
        source = datasets.class_images(cfg.data, root=data_dir)
    _warn_fallback(source.warning)
    meta = {"dataset": source.name, "dataset_warning": source.warning}
    return _Shared(source, meta)


def _run_imagenet_group(runs_, shared, start, device, backend, progress, checkpoint_every, position=0, report=None):
    cfg = runs_[0].config
    streams = [datasets.BinaryTaskStream(shared.data, run.config.seed) for run in runs_]
    nets = [ConvNet(3, 2, cfg.dropout, cfg.norm, seed=run.config.seed) for run in runs_]
    trainer = _make_trainer(runs_, nets, backend, device)
    R = len(runs_)
    rows = torch.arange(R, device=device)[:, None]

    keep_train, keep_test = _task_subsets(shared.data, cfg.train_per_class, cfg.test_per_class)

    def do_task(t):
        parts = [s.task(t) for s in streams]
        x_train, y_train, x_test, y_test = (
            torch.stack([p[i][keep] for p in parts]).to(device)
            for i, keep in enumerate((keep_train, keep_train, keep_test, keep_test)))
        n = x_train.shape[1]
        trainer.reset_head()
        if cfg.metrics_every and t % cfg.metrics_every == 0:
            _record_metrics(runs_, trainer, t, x_train[:, :cfg.probe_size])
        shufflers = [make_generator(derive_seed(run.config.seed, 2, t)) for run in runs_]
        for epoch in range(cfg.epochs):
            order = torch.stack([torch.randperm(n, generator=g) for g in shufflers]).to(device)
            correct = torch.zeros(R, dtype=torch.long, device=device)
            for a in range(0, n, cfg.batch_size):
                idx = order[:, a:a + cfg.batch_size]
                correct += trainer.train_batch(x_train[rows, idx], y_train[rows, idx])
        test = trainer.evaluate(x_test, y_test)
        for run, c, e in zip(runs_, (correct.double() / n).tolist(), (test.double() / x_test.shape[1]).tolist()):
            run.train_accuracy.append(c)
            run.accuracy.append(e)

    _train_tasks(runs_, trainer, start, progress, checkpoint_every, do_task, _describe(runs_, shared), position,
                 report)


def _task_subsets(source, train_per_class: int, test_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and test images a task uses: the first ``k`` of each of its two classes (``k = 0``:
    all of them)."""
    keep = []
    for name, k in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        per_class = getattr(source, name)
        if not 0 <= k <= per_class:
            raise ValueError(f"{name}={k} but {source.name} has {per_class} images per class")
        k = k or per_class
        keep.append(torch.cat([torch.arange(k), per_class + torch.arange(k)]))
    return keep[0], keep[1]


def linear_baseline(source, tasks: int, train_per_class: int = 0, test_per_class: int = 0, seed: int = 0,
                    max_iter: int = 2000) -> np.ndarray:
    """Test accuracy of a logistic regression on the raw pixels, fitted from scratch on each of the first ``tasks``
    class pairs of the Continual ImageNet run with this ``seed`` (the same pairs and images that run's network
    sees; ``train_per_class``/``test_per_class`` as in :class:`ContinualImageNet`). The paper's yardstick: what a
    network without hidden layers achieves. ``source``: a :func:`lopbook.data.class_images` data set."""
    from sklearn.linear_model import LogisticRegression

    keep_train, keep_test = _task_subsets(source, train_per_class, test_per_class)
    stream = datasets.BinaryTaskStream(source, seed)
    accuracy = []
    for t in range(min(tasks, stream.n_pairs)):
        x_train, y_train, x_test, y_test = stream.task(t)
        model = LogisticRegression(max_iter=max_iter)
        model.fit(x_train[keep_train].flatten(1).numpy(), y_train[keep_train].numpy())
        accuracy.append(model.score(x_test[keep_test].flatten(1).numpy(), y_test[keep_test].numpy()))
    return np.array(accuracy)


def run_continual_imagenet(configs, out_dir=None, data_dir=None, device=None, backend="auto", progress=True,
                           checkpoint_every=60.0, workers=None) -> list[RunResult]:
    """Run Continual ImageNet for every config (a :class:`ContinualImageNet` or a list of them).

    ``accuracy`` is the test accuracy on each task's held-out images after training on it; ``train_accuracy``
    the accuracy on the training batches of the task's last epoch. Other parameters as in
    :func:`run_permuted_mnist` (``data_dir``: the ImageNet 32x32 class files, else ``$LOPBOOK_IMAGENET``).
    """
    return _run_experiment(configs, ContinualImageNet, out_dir, device, backend, progress, checkpoint_every, workers,
                           data_dir)


_EXPERIMENTS = {"PermutedMNIST": (_prepare_mnist, _run_mnist_group),
                "ContinualImageNet": (_prepare_imagenet, _run_imagenet_group)}
