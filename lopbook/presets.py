"""The book's scales and every chapter's settings at each scale, in one place.

A chapter's ``parameters`` cell names its knobs (``tasks = None``, ...); each knob is
defined here once, with its type, what it means and its value at every scale:
``"smoke"`` (seconds, for the tests), ``"quick"`` (minutes on a CPU, what the rendered
book shows) and ``"full"`` (the paper's setting). Chapters that train the same runs use
the same knobs, so they share saved runs by construction.

>>> P = resolve("01_what_is_plasticity", "quick")
>>> P.tasks, P.width, P.step_size
(60, 100, 0.03)
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass

from .configs import ContinualImageNet, PermutedMNIST

__all__ = [
    "SCALES",
    "Knob",
    "CHAPTERS",
    "resolve",
    "resolve_scale",
    "check_value",
    "permuted_mnist",
    "settings",
]

SCALES = ("smoke", "quick", "full")


@dataclass(frozen=True)
class Knob:
    """One setting of a chapter: its type, meaning, and value at each scale."""

    type: object
    help: str
    smoke: object
    quick: object
    full: object

    def at(self, scale: str):
        return getattr(self, scale)


def resolve_scale(scale: str) -> str:
    """The scale to run at: ``$LOPBOOK_SCALE`` when set (the tests use ``smoke``), else
    ``scale``."""
    scale = os.environ.get("LOPBOOK_SCALE") or scale
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


# ------------------------------------------------------------------------- Permuted
# MNIST
# The setting shared by chapters 1 and 3-7 (backprop's headline runs).
PM = {
    "runs_per_setting": Knob(int, "seeds per setting (the headline runs)", 1, 2, 30),
    "tasks": Knob(int, "tasks per run", 3, 60, 800),
    "examples_per_task": Knob(
        int,
        "examples (one at a time) before the permutation changes",
        200,
        2000,
        60_000,
    ),
    "width": Knob(int, "hidden units per layer (three hidden layers)", 16, 100, 2000),
    "step_size": Knob(float, "SGD step size", 0.03, 0.03, 0.003),
}
# measured alongside, not chapter parameters
PM_METRICS = {
    "metrics_every": {"smoke": 1, "quick": 5, "full": 1},
    "probe_size": {"smoke": 100, "quick": 1000, "full": 2000},
}
PM_SWEEPS = {
    "sweep_runs": Knob(int, "seeds of every other setting of the sweeps", 1, 1, 10),
    "step_sizes": Knob(
        list[float],
        "step sizes compared",
        [0.1, 0.03],
        [0.03, 0.01, 0.003],
        [0.01, 0.003, 0.001],
    ),
}
PM_CBP = {
    "replacement_rate": Knob(
        float, "continual backprop's replacement rate", 1e-2, 1e-3, 1e-4
    ),
}
COMMON = {
    "data_dir": Knob(
        (str, type(None)),
        "the data's directory (None: the environment "
        "variable, else download, else the fallback)",
        None,
        None,
        None,
    ),
    "out_dir": Knob(
        (str, type(None)),
        "runs are saved here and loaded instead of recomputed "
        "(None: results/<experiment>, under $LOPBOOK_RESULTS if set)",
        None,
        None,
        None,
    ),
}
# #: where each chapter's runs are saved by default (under $LOPBOOK_RESULTS, else
# results/)
TOPICS = {"02_continual_imagenet": "continual_imagenet"}

CHAPTERS: dict[str, dict[str, Knob]] = {
    "01_what_is_plasticity": {
        **PM,
        "fresh_runs": Knob(
            int, "freshly initialised networks, one task each", 2, 10, 30
        ),
        **COMMON,
    },
    "03_permuted_mnist": {
        **PM,
        **PM_SWEEPS,
        "sweep_tasks": Knob(
            int, "tasks of the width and rate-of-change sweeps", 2, 30, 800
        ),
        "widths": Knob(
            list[int], "widths compared", [8, 16], [25, 100, 200], [100, 1000, 10_000]
        ),
        "change_every": Knob(
            list[int],
            "examples between two permutations, compared",
            [100, 200],
            [500, 2000, 6000],
            [10_000, 100_000, 1_000_000],
        ),
        **COMMON,
    },
    "04_why_plasticity_is_lost": {**PM, **PM_SWEEPS, **COMMON},
    "05_mitigations": {
        **PM,
        "method_runs": Knob(int, "seeds of each of the five methods", 1, 1, 30),
        "l2_weight_decay": Knob(
            float, "L2: the penalty coefficient lambda", 3e-3, 3e-3, 1e-4
        ),
        "sp_weight_decay": Knob(
            float, "Shrink-and-Perturb: the shrink (an L2 penalty)", 3e-3, 3e-3, 1e-4
        ),
        "sp_noise_std": Knob(
            float,
            "Shrink-and-Perturb: std of the noise after every step",
            1e-3,
            1e-3,
            1e-5,
        ),
        "dropout": Knob(
            float, "dropout probability of each hidden unit", 0.1, 0.1, 0.1
        ),
        "adam_step_size": Knob(
            float, "Adam's step size (betas 0.9, 0.999)", 1e-3, 1e-3, 1e-4
        ),
        "sweep": Knob(
            bool, "also run the tuning sweeps behind each method's strength", False,
            False, False
        ),
        **COMMON,
    },
    "06_continual_backprop": {
        **PM,
        **PM_CBP,
        "sweep_rates": Knob(
            list[float],
            "replacement rates of the sweep",
            [1e-3, 1e-2],
            [1e-5, 1e-4, 1e-3, 1e-2],
            [1e-6, 1e-5, 1e-4],
        ),
        **COMMON,
    },
    "07_summary": {**PM, **PM_CBP, **COMMON},
    "02_continual_imagenet": {
        "runs_per_step": Knob(int, "runs (seeds) per step size", 1, 2, 30),
        "tasks": Knob(int, "binary tasks in the sequence", 3, 40, 2000),
        "epochs": Knob(int, "passes over a task's training images", 2, 25, 250),
        "batch_size": Knob(int, "mini-batch size", 10, 10, 100),
        "step_sizes": Knob(
            list[float],
            "backprop step sizes (SGD with momentum)",
            [0.03],
            [0.04, 0.01],
            [0.01, 0.001, 0.0001],
        ),
        "momentum": Knob(float, "SGD momentum", 0.9, 0.9, 0.9),
        "train_per_class": Knob(
            int, "training images per class of each task (0: all)", 5, 10, 0
        ),
        "test_per_class": Knob(int, "test images per class (0: all)", 0, 0, 0),
        "metrics_every": Knob(
            int, "measure the three metrics every k tasks (0: never)", 1, 5, 50
        ),
        "linear_tasks": Knob(
            int, "class pairs on which the linear baseline is fitted", 2, 10, 100
        ),
        "bin_size": Knob(
            int, "tasks averaged into one point of the long-run plot", 1, 5, 50
        ),
        "data": Knob(
            str,
            "'imagenet', 'tinyimagenet', 'cifar100', 'digits' or 'auto'",
            "digits",
            "digits",
            "imagenet",
        ),
        **COMMON,
    },
}


def check_value(name: str, value, kind) -> object:
    """``value`` if it is of type ``kind`` (ints pass for floats), else a ``TypeError``
    naming the parameter, the type it needs and how to pass it with papermill."""
    if _fits(value, kind):
        return float(value) if kind is float else value
    hint = ""
    if typing.get_origin(kind) is list:
        hint = (
            f"; papermill's -p passes a string: pass lists with -y, e.g. "
            f"-y '{name}: [1, 2]'"
        )
    raise TypeError(
        f"parameter {name} must be {_describe(kind)}, got {value!r} "
        f"({type(value).__name__}){hint}"
    )


def _fits(value, kind) -> bool:
    if isinstance(kind, tuple):
        return any(_fits(value, k) for k in kind)
    if typing.get_origin(kind) is list:
        (inner,) = typing.get_args(kind)
        return (
            isinstance(value, list)
            and bool(value)
            and all(_fits(v, inner) for v in value)
        )
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(kind) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_describe(k) for k in kind)
    if typing.get_origin(kind) is list:
        inner = typing.get_args(kind)[0]
        plural = {int: "integers", float: "numbers", str: "strings"}.get(
            inner, str(inner)
        )
        return f"a non-empty list of {plural}"
    if kind is type(None):
        return "None"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "True or False",
    }.get(kind, getattr(kind, "__name__", str(kind)))


def resolve(
    chapter: str, scale: str, given: dict | None = None
) -> types.SimpleNamespace:
    """A chapter's settings at ``scale``: each knob's preset, replaced by the ``given``
    value when that is not None (checked against the knob's type)."""
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; known: {', '.join(CHAPTERS)}")
    scale = resolve_scale(scale)
    knobs = CHAPTERS[chapter]
    given = dict(given or {})
    unknown = sorted(set(given) - set(knobs))
    if unknown:
        raise ValueError(
            f"{chapter} has no parameter {', '.join(unknown)}; its parameters are "
            f"scale, {', '.join(knobs)}"
        )
    values = {}
    for name, knob in knobs.items():
        value = given.get(name)
        values[name] = (
            knob.at(scale) if value is None else check_value(name, value, knob.type)
        )
    if set(PM) <= set(knobs):
        values.update({k: v[scale] for k, v in PM_METRICS.items()})
    if values.get("out_dir") is None:
        root = os.environ.get("LOPBOOK_RESULTS") or "results"
        values["out_dir"] = os.path.join(root, TOPICS.get(chapter, "permuted_mnist"))
    return types.SimpleNamespace(scale=scale, **values)


def permuted_mnist(P, label: str = "Backprop") -> PermutedMNIST:
    """The shared Permuted MNIST config of settings ``P`` (from :func:`resolve`)."""
    return PermutedMNIST(
        tasks=P.tasks,
        examples_per_task=P.examples_per_task,
        width=P.width,
        step_size=P.step_size,
        metrics_every=P.metrics_every,
        probe_size=P.probe_size,
        label=label,
    )


def continual_imagenet(P) -> ContinualImageNet:
    """Chapter 2's base config of settings ``P``."""
    return ContinualImageNet(
        tasks=P.tasks,
        epochs=P.epochs,
        batch_size=P.batch_size,
        momentum=P.momentum,
        train_per_class=P.train_per_class,
        test_per_class=P.test_per_class,
        metrics_every=P.metrics_every,
        data=P.data,
    )


def settings(scale: str, given: dict, **presets: dict) -> types.SimpleNamespace:
    """Settings from ad-hoc presets (earlier versions' notebooks): the preset of the
    resolved scale, overridden by every ``given`` value that is not None.

    >>> P = settings("quick", dict(tasks=None, runs=3), quick=dict(tasks=60, runs=2))
    >>> P.scale, P.tasks, P.runs
    ('quick', 60, 3)
    """
    scale = resolve_scale(scale)
    if scale not in presets:
        raise ValueError(
            f"no settings for scale {scale!r}; this notebook has {sorted(presets)}"
        )
    values = dict(presets[scale])
    values.update({k: v for k, v in given.items() if v is not None})
    return types.SimpleNamespace(scale=scale, **values)
