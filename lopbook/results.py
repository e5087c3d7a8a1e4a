"""Results of runs: what one run produced, saving and loading them atomically, and summaries over runs."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["RunResult", "save_result", "load_result", "load_results", "group_by_label", "mean_and_stderr",
           "bin_tasks", "run_key", "numbers_config", "atomic_write"]


@dataclass
class RunResult:
    """What one run produced.

    ``accuracy[t]`` is the run's accuracy on task ``t``: online accuracy (Permuted MNIST: predictions made before
    learning from each example) or test accuracy after the task (Continual ImageNet). ``metrics`` holds the
    plasticity metrics measured at the start of the tasks listed in ``metrics["task"]``. ``meta`` records the
    dataset actually used (and its warning, when it is a fallback), library versions, device, wall time and
    the backend.
    """

    config: object
    accuracy: np.ndarray
    train_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    metrics: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.config.name

    @property
    def tasks_done(self) -> int:
        return len(self.accuracy)

    @property
    def complete(self) -> bool:
        return self.tasks_done >= self.config.tasks

    def __repr__(self) -> str:
        acc = self.accuracy
        summary = f"{acc[0]:.3f} -> {acc[-1]:.3f}" if len(acc) else "no tasks yet"
        return (f"RunResult({self.label!r}, seed={self.config.seed}, tasks {self.tasks_done}/{self.config.tasks}, "
                f"accuracy {summary}, data={self.meta.get('dataset')!r})")


def run_key(config) -> str:
    """A directory name for a run: readable, and unique to every setting that changes the numbers (so runs with
    the same settings but different labels share it)."""
    digest = hashlib.sha1(json.dumps(numbers_config(config), sort_keys=True, default=str).encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", config.algorithm.lower()).strip("-")
    return f"{type(config).__name__.lower()}-{slug}-seed{config.seed}-{digest}"


def numbers_config(config) -> dict:
    """The settings of a config that change its numbers (all but the label)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "label"}


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and move the file into place, so that ``path`` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _arrays(result: RunResult) -> dict[str, np.ndarray]:
    arrays = {"accuracy": np.asarray(result.accuracy), "train_accuracy": np.asarray(result.train_accuracy)}
    arrays.update({f"metrics/{k}": np.asarray(v) for k, v in result.metrics.items()})
    return arrays


def save_result(result: RunResult, directory: Path) -> None:
    """Write ``arrays.npz`` then ``result.json`` (config, seed, meta) into ``directory``, each atomically."""
    directory = Path(directory)
    arrays = _arrays(result)

    def write_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(directory / "arrays.npz", write_npz)
    record = {"experiment": type(result.config).__name__, "config": dataclasses.asdict(result.config),
              "tasks_done": result.tasks_done, "complete": result.complete, "meta": result.meta}
    atomic_write(directory / "result.json",
                 lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=_jsonable)))


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def load_result(directory: Path) -> RunResult:
    """Read a result written by :func:`save_result`."""
    from . import experiments

    directory = Path(directory)
    record = json.loads((directory / "result.json").read_text())
    kind = getattr(experiments, record["experiment"])
    config = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()})
    with np.load(directory / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    metrics = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("metrics/")}
    result = RunResult(config, arrays["accuracy"], arrays["train_accuracy"], metrics, record["meta"])
    if result.tasks_done != record["tasks_done"]:
        raise ValueError(f"{directory}: arrays.npz and result.json disagree; delete the directory to redo the run")
    return result


def load_results(out_dir: Path) -> list[RunResult]:
    """Every result saved under ``out_dir`` (one sub-directory per run)."""
    return [load_result(p.parent) for p in sorted(Path(out_dir).glob("*/result.json"))]


def group_by_label(results: list[RunResult]) -> dict[str, list[RunResult]]:
    """Runs grouped by their label (runs of one setting with different seeds), in first-seen order."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.label, []).append(r)
    return groups


def mean_and_stderr(arrays) -> tuple[np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) and its standard error (sample std / sqrt(runs); zero for a single run)."""
    stack = np.asarray(arrays, dtype=float)
    mean = stack.mean(axis=0)
    if stack.shape[0] < 2:
        return mean, np.zeros_like(mean)
    return mean, stack.std(axis=0, ddof=1) / np.sqrt(stack.shape[0])


def bin_tasks(values: np.ndarray, size: int) -> np.ndarray:
    """Average consecutive tasks in bins of ``size`` along the last axis (a last, partial bin is dropped)."""
    values = np.asarray(values, dtype=float)
    if size <= 1:
        return values
    n = values.shape[-1] // size
    if n == 0:
        raise ValueError(f"cannot bin {values.shape[-1]} tasks into bins of {size}")
    return values[..., : n * size].reshape(*values.shape[:-1], n, size).mean(axis=-1)
