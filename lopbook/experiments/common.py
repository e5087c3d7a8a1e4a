"""What the experiments share: metrics at the start of a task, run descriptions,
warnings."""

from __future__ import annotations

import sys
import warnings

from ..data import DataWarning


def record_metrics(group, t: int, probe) -> None:
    """Measure the plasticity metrics of every run of ``group`` on ``probe`` at task
    ``t``."""
    for run, m in zip(group.runs, group.trainer.metrics(probe)):
        run.metrics.append((t, m))


def describe_runs(runs) -> str:
    labels = sorted({r.config.name for r in runs})
    n = len(runs)
    return f"{', '.join(labels)[:60]}, {n} run{'s' * (n > 1)}"


def warn_fallback(message: str | None) -> None:
    """One loud DataWarning, attributed to the runner's caller (a notebook cell)."""
    if message:
        frame, level = sys._getframe(1), 2  # stacklevel 2: warn_fallback's caller
        while frame is not None and frame.f_globals.get("__name__", "").startswith(
            "lopbook"
        ):
            frame, level = frame.f_back, level + 1  # the first frame outside lopbook
        warnings.warn(message, DataWarning, stacklevel=level)
