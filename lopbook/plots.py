"""The book's figures: accuracy per task with bands of one standard error, and the
three plasticity metrics, one panel each with a title.

Runs are grouped by label (one curve per setting, averaged over its seeds). Every
method has one colour throughout the book (:func:`color_of`), and the figures are
sized for the book's column (about 7.5 inches wide).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .results import RunResult, bin_tasks, group_by_label, mean_and_stderr

__all__ = [
    "plot_accuracy",
    "plot_metrics",
    "plot_summary",
    "show_permutation",
    "color_of",
    "METRICS",
    "WIDTH",
]

#: the book's column width, in inches
WIDTH = 7.5

#: metric key in RunResult.metrics -> (panel title, axis label)
METRICS = {
    "dead_percent_total": ("Dead units", "dead units (%)"),
    "weight_magnitude_total": ("Weight magnitude", "average |w|"),
    "effective_rank_percent": ("Effective rank", "effective rank (% of max)"),
}

#: one colour per method, by the start of its label (the first match wins); no two
#: methods share one (C5-C9 are matplotlib's #8c564b, #e377c2, #7f7f7f, #bcbd22 and
#: #17becf)
METHOD_COLORS = [
    ("Backprop", "C0"),
    ("Adam", "C9"),
    ("L2 Init", "#8c564b"),
    ("L2", "C2"),
    ("Shrink and Perturb", "C1"),
    ("Dropout", "C4"),
    ("Layer norm", "C8"),
    ("Continual backprop", "C3"),
    ("ReDo", "C6"),
    ("Weight clipping", "#a6761d"),
    ("UPGD", "#e6ab02"),
    ("Normalize-and-Project", "#7f7f7f"),
    ("Spectral", "#1b9e77"),
    ("Self-normalized", "#393b79"),
]


def color_of(label: str, default=None):
    """The colour of the method a label starts with (None: matplotlib's next colour)."""
    for start, color in METHOD_COLORS:
        if label.startswith(start):
            return color
    return default


def _band(ax, x, runs: np.ndarray, label: str, color=None):
    mean, err = mean_and_stderr(runs)
    (line,) = ax.plot(x, mean, label=label, color=color, lw=1.8)
    if len(runs) > 1:
        ax.fill_between(
            x, mean - err, mean + err, color=line.get_color(), alpha=0.2, lw=0
        )
    return line


def _runs_note(groups) -> str:
    counts = sorted({len(g) for g in groups.values()})
    if counts[-1] == 1:
        return "1 run each" if len(groups) > 1 else "1 run"
    n = " to ".join(map(str, (counts[0], counts[-1]))) if len(counts) > 1 else counts[0]
    return f"mean of {n} runs ± 1 s.e."


def _color(label, colors):
    return (colors or {}).get(label) or color_of(label)


def measure_name(results: list[RunResult]) -> str:
    """What ``accuracy`` holds for these results (online or test accuracy, ...)."""
    if results and results[0].meta.get("measure"):
        return results[0].meta["measure"]
    if results and type(results[0].config).__name__ == "PermutedMNIST":
        return "online accuracy"
    return "test accuracy"


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
        _, ax = plt.subplots(figsize=(WIDTH * 0.85, 3.4), constrained_layout=True)
    groups = group_by_label(results)
    for label, runs in groups.items():
        n = min(r.tasks_done for r in runs)
        acc = bin_tasks(np.stack([r.accuracy[:n] for r in runs]), bin_size)
        x = np.arange(acc.shape[1]) * bin_size + (bin_size + 1) / 2
        _band(ax, x, acc, label, _color(label, colors))
    ax.set_xlabel("task")
    ax.set_ylabel(ylabel or measure_name(results))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(frameon=False, title=_runs_note(groups))
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
    layer="mean",
    colors: dict | None = None,
    legend: bool = True,
):
    """The plasticity metrics over tasks, one panel each (per-layer metrics: hidden
    layer ``layer``, or their average over the hidden layers, ``"mean"``)."""
    if axes is None:
        _, axes = plt.subplots(
            1, len(keys), figsize=(WIDTH, 2.8), constrained_layout=True
        )
    groups = group_by_label(results)
    for ax, key in zip(np.atleast_1d(axes), keys):
        for label, runs in groups.items():
            if not runs[0].metrics:
                continue
            n = min(len(r.metrics["task"]) for r in runs)
            values = np.stack([_metric(r, key, layer)[:n] for r in runs])
            _band(
                ax,
                runs[0].metrics["task"][:n] + 1,
                values,
                label,
                _color(label, colors),
            )
        title, name = METRICS.get(key, (key, key))
        if key == "effective_rank_percent":
            name = (
                "% of max, mean of layers"
                if layer == "mean"
                else "% of max, last layer"
                if layer == -1
                else f"% of max, hidden layer {layer + 1}"
            )
        ax.set_title(title)
        ax.set_ylabel(name)
        ax.set_xlabel("task")
        ax.grid(alpha=0.3)
    if legend:
        np.atleast_1d(axes)[0].legend(frameon=False)
    return axes


def plot_summary(
    results: list[RunResult],
    bin_size: int = 1,
    title: str | None = None,
    colors: dict | None = None,
    layer="mean",
):
    """Accuracy and the three metrics in a 2 x 2 grid of titled panels, with one
    legend below (as the paper's Extended Data Fig. 4a, which has them in a row)."""
    fig, axes = plt.subplots(2, 2, figsize=(WIDTH, 5.6), constrained_layout=True)
    plot_accuracy(results, axes[0, 0], bin_size=bin_size, colors=colors, legend=False)
    axes[0, 0].set_title(measure_name(results).capitalize())
    plot_metrics(results, axes.flat[1:], colors=colors, legend=False, layer=layer)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    groups = group_by_label(results)
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=min(3, len(labels)),
        frameon=False,
        title=_runs_note(groups),
    )
    if title:
        fig.suptitle(title)
    return fig


def show_permutation(
    image: np.ndarray,
    permutation: np.ndarray,
    axes=None,
    titles=("original", "permuted"),
):
    """An image next to the same image with its pixels permuted (one permutation
    for every image of a task)."""
    image = np.asarray(image, dtype=float)
    flat = image.reshape(-1)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(4.5, 2.4))
    for ax, picture, title in zip(axes, (flat, flat[np.asarray(permutation)]), titles):
        ax.imshow(picture.reshape(image.shape), cmap="gray_r")
        ax.set_title(title)
        ax.axis("off")
    return axes
