"""The figures every chapter uses: accuracy per task with +-1 standard-error bands, and
the
three plasticity
metrics side by side. Runs are grouped by label (one curve per setting, averaged over
its seeds)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .results import RunResult, bin_tasks, group_by_label, mean_and_stderr

__all__ = [
    "plot_accuracy",
    "plot_metrics",
    "plot_summary",
    "show_permutation",
    "METRICS",
]

# metric key in RunResult.metrics -> axis label
METRICS = {
    "dead_percent_total": "dead units (%)",
    "weight_magnitude_total": "average weight magnitude",
    "effective_rank_percent": "effective rank (% of max)",
}


def _band(ax, x, runs: np.ndarray, label: str, color=None):
    mean, err = mean_and_stderr(runs)
    (line,) = ax.plot(x, mean, label=label, color=color, lw=1.8)
    if len(runs) > 1:
        ax.fill_between(
            x, mean - err, mean + err, color=line.get_color(), alpha=0.25, lw=0
        )
    return line


def _runs_note(groups) -> str:
    counts = sorted({len(g) for g in groups.values()})
    n = "/".join(map(str, counts))
    return f"mean of {n} run{'s' * (counts[-1] > 1)}" + (
        " ± 1 s.e." if counts[-1] > 1 else ""
    )


def plot_accuracy(
    results: list[RunResult],
    ax=None,
    bin_size: int = 1,
    ylabel: str | None = None,
    title: str | None = None,
    colors: dict | None = None,
    legend: bool = True,
):
    """Accuracy per task (averaged over ``bin_size`` consecutive tasks), one curve per
    label."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    groups = group_by_label(results)
    for label, runs in groups.items():
        n = min(r.tasks_done for r in runs)
        acc = bin_tasks(np.stack([r.accuracy[:n] for r in runs]), bin_size)
        x = np.arange(acc.shape[1]) * bin_size + (bin_size + 1) / 2
        _band(ax, x, acc, label, (colors or {}).get(label))
    ax.set_xlabel("task number")
    default = (
        "online accuracy"
        if results and type(results[0].config).__name__ == "PermutedMNIST"
        else "test accuracy"
    )
    ax.set_ylabel(ylabel or default)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(
            frameon=False,
            fontsize="small",
            title=_runs_note(groups),
            title_fontsize="x-small",
        )
    return ax


def _metric(result: RunResult, key: str, layer) -> np.ndarray:
    values = np.asarray(result.metrics[key], dtype=float)
    if values.ndim == 2:
        values = values.mean(axis=1) if layer == "mean" else values[:, layer]
    return values


def plot_metrics(
    results: list[RunResult],
    axes=None,
    keys=tuple(METRICS),
    layer=-1,
    colors: dict | None = None,
    legend: bool = True,
):
    """The plasticity metrics over tasks side by side (per-layer metrics: hidden layer
    ``layer``, or "mean")."""
    if axes is None:
        _, axes = plt.subplots(
            1, len(keys), figsize=(4 * len(keys), 3.2), constrained_layout=True
        )
    groups = group_by_label(results)
    for ax, key in zip(np.atleast_1d(axes), keys):
        for label, runs in groups.items():
            if not runs[0].metrics:
                continue
            n = min(len(r.metrics["task"]) for r in runs)
            _band(
                ax,
                runs[0].metrics["task"][:n] + 1,
                np.stack([_metric(r, key, layer)[:n] for r in runs]),
                label,
                (colors or {}).get(label),
            )
        name = METRICS.get(key, key)
        if key == "effective_rank_percent" and layer != "mean":
            name += (
                " (last hidden layer)"
                if layer == -1
                else f" (hidden layer {layer + 1})"
            )
        ax.set_ylabel(name)
        ax.set_xlabel("task number")
        ax.grid(alpha=0.3)
    if legend:
        np.atleast_1d(axes)[0].legend(frameon=False, fontsize="small")
    return axes


def plot_summary(
    results: list[RunResult],
    bin_size: int = 1,
    title: str | None = None,
    colors: dict | None = None,
):
    """Accuracy and the three metrics in one row of four panels (as in the paper's
    Extended Data Fig. 4)."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6), constrained_layout=True)
    plot_accuracy(results, axes[0], bin_size=bin_size, colors=colors)
    plot_metrics(results, axes[1:], colors=colors, legend=False)
    if title:
        fig.suptitle(title)
    return fig


def show_permutation(
    image: np.ndarray,
    permutation: np.ndarray,
    axes=None,
    titles=("original", "permuted"),
):
    """An image next to the same image with its pixels permuted (the same permutation
    for every image of a task)."""
    image = np.asarray(image, dtype=float)
    flat = image.reshape(-1)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(5, 2.6))
    for ax, picture, title in zip(axes, (flat, flat[np.asarray(permutation)]), titles):
        ax.imshow(picture.reshape(image.shape), cmap="gray_r")
        ax.set_title(title)
        ax.axis("off")
    return axes
