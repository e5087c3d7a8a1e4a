"""Results of runs: what one run produced, saved and read back, and summaries over runs.

A finished (or partial) run is one JSON file, ``result.json``, written atomically:
its config, the data it was trained on, its per-task numbers and a record of how
it was made (library versions, device, wall time). A file that was cut short or
edited by hand is reported by name, with what to do.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .configs import config_from_dict, key_settings
from .io import write_text

__all__ = [
    "RunResult",
    "save_result",
    "load_result",
    "load_results",
    "group_by_label",
    "mean_and_stderr",
    "bin_tasks",
    "first_and_last",
    "FORMAT",
]

FORMAT = "lopbook-result/2"


@dataclass
class RunResult:
    """What one run produced.

    ``accuracy[t]`` is the run's accuracy on task ``t``: online accuracy (Permuted
    MNIST: predictions made before learning from each example) or test accuracy after
    the task (Continual ImageNet). ``metrics`` holds the plasticity metrics measured at
    the start of the tasks listed in ``metrics["task"]``. ``meta`` records the data
    set actually used (its name, identity and warning, when it is a fallback), the
    library versions, device, wall time and backend.
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
        return (
            f"RunResult({self.label!r}, seed={self.config.seed}, tasks "
            f"{self.tasks_done}/{self.config.tasks}, accuracy {summary}, "
            f"data={self.meta.get('dataset')!r})"
        )


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def result_record(result: RunResult) -> dict:
    """The JSON-ready record of a result."""
    return {
        "format": FORMAT,
        "experiment": type(result.config).__name__,
        "config": _plain(dataclasses.asdict(result.config)),
        "key_settings": key_settings(result.config),
        "tasks_done": result.tasks_done,
        "complete": result.complete,
        "accuracy": _plain(np.asarray(result.accuracy, dtype=float)),
        "train_accuracy": _plain(np.asarray(result.train_accuracy, dtype=float)),
        "metrics": {k: _plain(np.asarray(v)) for k, v in result.metrics.items()},
        "meta": _plain(result.meta),
    }


def save_result(result: RunResult, directory: Path) -> None:
    """Write ``directory/result.json`` atomically."""
    text = json.dumps(result_record(result), indent=1, allow_nan=True, default=str)
    write_text(Path(directory) / "result.json", text)


def result_from_record(record: dict, origin: str = "a result record") -> RunResult:
    """Rebuild a :class:`RunResult` from :func:`result_record`'s output."""
    try:
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT!r}")
        config = config_from_dict(record["experiment"], record["config"])
        accuracy = np.asarray(record["accuracy"], dtype=float)
        metrics = {k: np.asarray(v, dtype=float) for k, v in record["metrics"].items()}
        result = RunResult(
            config,
            accuracy,
            np.asarray(record["train_accuracy"], dtype=float),
            metrics,
            dict(record["meta"]),
        )
        if result.tasks_done != record["tasks_done"] or accuracy.ndim != 1:
            raise ValueError(
                f"it says {record['tasks_done']} tasks but holds "
                f"{result.tasks_done} accuracies"
            )
        if metrics and any(len(v) != len(metrics["task"]) for v in metrics.values()):
            raise ValueError("its metrics have different lengths")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(
            f"{origin} is not a valid lopbook result ({err}); if it was edited "
            "or cut short, delete it (and its run directory) to compute the run "
            "again"
        ) from None
    return result


def load_result(directory: Path) -> RunResult:
    """Read ``directory/result.json`` (written by :func:`save_result`)."""
    path = Path(directory) / "result.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}): the file was cut short or "
            "edited by hand; delete its directory to compute the run again"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} does not hold a lopbook result; delete its directory")
    return result_from_record(record, str(path))


def load_results(out_dir: Path) -> list[RunResult]:
    """Every result saved under ``out_dir`` (one sub-directory per run)."""
    return [load_result(p.parent) for p in sorted(Path(out_dir).glob("*/result.json"))]


def group_by_label(results: list[RunResult]) -> dict[str, list[RunResult]]:
    """Runs grouped by their label (runs of one setting with different seeds), in
    first-seen order."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.label, []).append(r)
    return groups


def mean_and_stderr(arrays) -> tuple[np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) and its standard error (sample std / sqrt(runs); zero
    for a single run)."""
    stack = np.asarray(arrays, dtype=float)
    mean = stack.mean(axis=0)
    if stack.shape[0] < 2:
        return mean, np.zeros_like(mean)
    return mean, stack.std(axis=0, ddof=1) / np.sqrt(stack.shape[0])


def bin_tasks(values: np.ndarray, size: int) -> np.ndarray:
    """Average consecutive tasks in bins of ``size`` along the last axis (a last,
    partial bin is dropped)."""
    values = np.asarray(values, dtype=float)
    if size <= 1:
        return values
    n = values.shape[-1] // size
    if n == 0:
        raise ValueError(f"cannot bin {values.shape[-1]} tasks into bins of {size}")
    return values[..., : n * size].reshape(*values.shape[:-1], n, size).mean(axis=-1)


def first_and_last(
    results: list[RunResult], k: int | None = None
) -> tuple[float, float]:
    """Mean accuracy over the first and over the last ``k`` tasks of ``results`` (all
    runs of one setting; ``k`` None: a tenth of the tasks, at least one)."""
    n = min(r.tasks_done for r in results)
    acc = np.stack([r.accuracy[:n] for r in results])
    k = max(1, n // 10) if k is None else max(1, min(k, n))
    return float(acc[:, :k].mean()), float(acc[:, -k:].mean())
