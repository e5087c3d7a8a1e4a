"""The book's scales and every chapter's settings at each scale, in one place.

A chapter's ``parameters`` cell names its knobs (``tasks = None``, ...); each knob is
defined here once, with its type, what it means and its value at every scale:

* ``"smoke"``: seconds, for the tests;
* ``"quick"``: minutes on a CPU, what the rendered book computes live;
* ``"medium"``: the results of record (:mod:`lopbook.record`), computed once, about
  three CPU-hours for the whole book, as close to the paper as that allows;
* ``"full"``: the paper's setting, following the authors' code where the paper is
  silent (a GPU's work).

Chapters that train the same runs use the same knobs, so they share saved runs by
construction.

>>> P = resolve("01_what_is_plasticity", "quick")
>>> P.tasks, P.width, P.step_size
(60, 100, 0.03)
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass

from .configs import ContinualImageNet, PermutedMNIST, SlowlyChangingRegression

__all__ = [
    "SCALES",
    "Knob",
    "CHAPTERS",
    "resolve",
    "resolve_scale",
    "check_value",
    "permuted_mnist",
    "continual_imagenet",
    "slowly_changing_regression",
    "settings",
]

SCALES = ("smoke", "quick", "medium", "full")


@dataclass(frozen=True)
class Knob:
    """One setting of a chapter: its type, what it means, its value at each scale."""

    type: object
    help: str
    smoke: object
    quick: object
    medium: object
    full: object

    def at(self, scale: str):
        return getattr(self, scale)


def same(kind, help: str, value) -> Knob:
    """A knob with one value at every scale."""
    return Knob(kind, help, value, value, value, value)


def resolve_scale(scale: str, override: bool = True) -> str:
    """The scale to run at: ``$LOPBOOK_SCALE`` when set and ``override`` (the tests use
    ``smoke``), else ``scale``."""
    if override:
        scale = os.environ.get("LOPBOOK_SCALE") or scale
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


# ------------------------------------------------------------------ Permuted MNIST
# The setting shared by chapters 1, 3-6, 8 and 9 (backprop's headline runs).
PM = {
    "runs_per_setting": Knob(int, "seeds per setting (the headline runs)", 1, 2, 5, 30),
    "tasks": Knob(int, "tasks per run", 3, 60, 100, 800),
    "examples_per_task": Knob(int, "examples (one at a time) per task",
                              200, 2000, 10_000, 60_000),
    "width": Knob(int, "hidden units per layer (three hidden layers)",
                  16, 100, 100, 2000),
    "step_size": Knob(float, "SGD step size", 0.03, 0.03, 0.01, 0.003),
}
# measured alongside, not chapter parameters
PM_FIXED = {
    "metrics_every": {"smoke": 1, "quick": 5, "medium": 5, "full": 1},
    "probe_size": {"smoke": 100, "quick": 1000, "medium": 2000, "full": 2000},
    # the MLP's output layer with the linear gain, as the authors' code draws it
    "init": dict.fromkeys(SCALES, "kaiming_linear_output"),
}
PM_SWEEPS = {
    "sweep_runs": Knob(int, "seeds of every other setting of the sweeps", 1, 1, 2, 10),
    "step_sizes": Knob(list[float], "step sizes compared", [0.1, 0.03],
                       [0.03, 0.01, 0.003], [0.03, 0.01, 0.003], [0.01, 0.003, 0.001]),
}
PM_CBP = {
    "replacement_rate": Knob(float, "continual backprop's replacement rate",
                             1e-2, 1e-3, 1e-4, 1e-4),
}
COMMON = {
    "data_dir": same((str, type(None)), "the data's directory (None: the environment "
                     "variable, else download, else the fallback)", None),
    "out_dir": same((str, type(None)), "runs are saved here and loaded instead of "
                    "recomputed (None: results/<experiment>, under $LOPBOOK_RESULTS if "
                    "set)", None),
}
#: where each chapter's runs are saved by default (under $LOPBOOK_RESULTS, else
#: results/)
TOPICS = {
    "02_continual_imagenet": "continual_imagenet",
    "07_slowly_changing_regression": "slowly_changing_regression",
}
#: continual backprop's utility: the paper's contribution utility where the chapters
#: teach it, the authors' "adaptable" variant where the paper's results are reproduced
UTILITY = {"smoke": "contribution", "quick": "contribution", "medium": "adaptable",
           "full": "adaptable"}

MITIGATIONS = {
    "method_runs": Knob(int, "seeds of each method", 1, 1, 2, 30),
    "l2_weight_decay": Knob(float, "L2: the penalty coefficient lambda",
                            3e-3, 3e-3, 1e-3, 1e-4),
    "sp_weight_decay": Knob(float, "Shrink-and-Perturb: the shrink (an L2 penalty)",
                            3e-3, 3e-3, 1e-3, 1e-4),
    "sp_noise_std": Knob(float, "Shrink-and-Perturb: std of the noise after every step",
                         1e-3, 1e-3, 1e-4, 1e-5),
    "dropout": same(float, "dropout probability of each hidden unit", 0.1),
    "adam_step_size": Knob(float, "Adam's step size (betas 0.9, 0.999)",
                           1e-3, 1e-3, 3e-4, 1e-4),
    "sweep": same(bool, "also run the tuning sweeps behind each method's strength",
                  False),
}
NEWER = {
    "method_runs": Knob(int, "seeds of each method", 1, 1, 2, 30),
    "l2_init_weight_decay": Knob(float, "L2 Init: lambda", 1e-3, 1e-3, 1e-3, 1e-2),
    "redo_threshold": same(float, "ReDo: the dormancy threshold tau", 0.1),
    "redo_period": Knob(int, "ReDo: steps between recyclings", 100, 1000, 5000, 60_000),
    "clip_kappa": same(float, "weight clipping: kappa", 2.0),
    "upgd_noise_std": same(float, "UPGD: std of the perturbation", 0.1),
    "upgd_weight_decay": Knob(float, "UPGD: weight decay", 1e-3, 1e-3, 1e-3, 1e-2),
    "spectral_strength": Knob(float, "spectral regularisation: lambda",
                              1e-3, 1e-3, 1e-3, 1e-4),
    "snr_percentile": same(float, "self-normalized resets: the percentile", 0.99),
    "sweep": same(bool, "also run the tuning sweeps behind each method's strength",
                  False),
}

# ------------------------------------------------------------------ Continual ImageNet
IMAGENET = {
    "runs_per_step": Knob(int, "runs (seeds) per step size", 1, 1, 2, 30),
    "tasks": Knob(int, "binary tasks in the sequence", 3, 40, 300, 2000),
    "epochs": Knob(int, "passes over a task's training images", 2, 10, 10, 250),
    "batch_size": Knob(int, "mini-batch size", 10, 25, 25, 100),
    "step_sizes": Knob(list[float], "backprop's step sizes (SGD with momentum 0.9)",
                       [0.03], [0.03, 0.01], [0.03, 0.01], [0.01, 0.001, 0.0001]),
    "momentum": same(float, "SGD momentum", 0.9),
    "train_per_class": Knob(int, "training images per class of each task (0: all)",
                            5, 50, 100, 0),
    "test_per_class": same(int, "test images per class of each task (0: all)", 0),
    "metrics_every": Knob(int, "measure the three metrics every k tasks (0: never)",
                          1, 5, 10, 50),
    "linear_tasks": Knob(int, "class pairs the linear baseline is fitted on",
                         2, 40, 100, 100),
    "bin_size": Knob(int, "tasks averaged into one point of the long-run plots",
                     1, 5, 25, 50),
    "remedy_runs": Knob(int, "runs of each remedy (Fig. 1c)", 1, 1, 1, 30),
    "remedy_tasks": Knob(int, "tasks of the remedies' runs", 3, 40, 300, 5000),
    "l2_step_size": Knob(float, "L2's step size", 0.03, 0.03, 0.03, 0.03),
    "l2_weight_decay": Knob(float, "L2's lambda", 2.25e-4, 2.25e-4, 2.25e-4, 3e-6),
    "sp_step_size": Knob(float, "Shrink-and-Perturb's step size",
                         0.03, 0.03, 0.03, 0.01),
    "sp_weight_decay": Knob(float, "Shrink-and-Perturb's lambda",
                            2.5e-4, 2.5e-4, 2.5e-4, 1e-5),
    "sp_noise_std": Knob(float, "Shrink-and-Perturb's noise", 8.7e-5, 8.7e-5, 8.7e-5,
                         1e-5),
    "cbp_step_size": Knob(float, "continual backprop's (and backprop's) step size",
                          0.03, 0.03, 0.03, 0.01),
    "replacement_rate": Knob(float, "continual backprop's replacement rate",
                             0.02, 0.02, 0.02, 3e-4),
    "data": Knob(str, "'imagenet', 'tinyimagenet', 'cifar100', 'digits' or 'auto'",
                 "auto", "auto", "tinyimagenet", "imagenet"),
}
# how the tasks are formed and the network drawn, by scale
IMAGENET_FIXED = {
    # fresh random class pairs: the Tiny ImageNet photos have 60 classes (30 pairs)
    "pairing": {"smoke": "random", "quick": "random", "medium": "random",
                "full": "order"},
    # the authors' ConvNet has PyTorch's default initialisation; on pixels in [0, 1]
    # it learns the first tasks slowly, so the scaled-down runs use Kaiming's
    "init": {"smoke": "kaiming", "quick": "kaiming", "medium": "kaiming",
             "full": "pytorch_default"},
}

# ----------------------------------------------------------- slowly-changing regression
ALL_ACTIVATIONS = ["relu", "leaky_relu", "elu", "swish", "tanh", "sigmoid", "linear"]
REGRESSION = {
    "runs_per_setting": Knob(int, "runs of every activation, step size and method",
                             2, 5, 10, 100),
    "bins": Knob(int, "bins of examples (the error is averaged over each)",
                 3, 15, 35, 75),
    "bin_size": Knob(int, "examples per bin", 200, 20_000, 20_000, 40_000),
    "step_sizes": Knob(list[float], "SGD step sizes", [0.01], [0.01], [0.01],
                       [0.01, 0.003, 0.001]),
    "activations": Knob(list[str], "the learner's activation functions ('linear': no "
                        "hidden layer)", ["relu", "tanh", "linear"], ALL_ACTIVATIONS,
                        ALL_ACTIVATIONS, ALL_ACTIVATIONS),
    "method_activations": Knob(list[str], "activations L2, Shrink-and-Perturb and "
                               "continual backprop are also run with (at the first "
                               "step size)", ["relu"], ["relu", "tanh"],
                               ["relu", "tanh"], ALL_ACTIVATIONS[:-1]),
    "l2_weight_decay": same(float, "L2's lambda", 1e-3),
    "sp_weight_decay": same(float, "Shrink-and-Perturb's lambda", 1e-3),
    "sp_noise_std": same(float, "Shrink-and-Perturb's noise", 1e-3),
    "replacement_rate": same(float, "continual backprop's replacement rate", 1e-4),
    "maturity_threshold": same(int, "continual backprop's maturity threshold", 100),
}

CHAPTERS: dict[str, dict[str, Knob]] = {
    "01_what_is_plasticity": {
        **PM,
        "fresh_runs": Knob(int, "freshly initialised networks, one task each",
                           2, 10, 10, 30),
        **COMMON,
    },
    "02_continual_imagenet": {**IMAGENET, **COMMON},
    "03_permuted_mnist": {
        **PM,
        **PM_SWEEPS,
        "sweep_tasks": Knob(int, "tasks of the width and rate-of-change sweeps",
                            2, 30, 100, 800),
        "widths": Knob(list[int], "widths compared", [8, 16], [25, 100, 200],
                       [25, 100, 400], [100, 1000, 10_000]),
        "change_every": Knob(list[int], "examples between two permutations, compared",
                             [100, 200], [500, 2000, 6000], [2500, 10_000, 40_000],
                             [10_000, 100_000, 1_000_000]),
        **COMMON,
    },
    "04_why_plasticity_is_lost": {**PM, **PM_SWEEPS, **COMMON},
    "05_mitigations": {**PM, **MITIGATIONS, **COMMON},
    "06_continual_backprop": {
        **PM,
        **PM_CBP,
        "sweep_rates": Knob(list[float], "replacement rates of the sweep", [1e-3, 1e-2],
                            [1e-5, 1e-4, 1e-3, 1e-2], [1e-5, 1e-4, 1e-3],
                            [1e-6, 1e-5, 1e-4]),
        **COMMON,
    },
    "07_slowly_changing_regression": {**REGRESSION, **COMMON},
    "08_newer_remedies": {**PM, **PM_CBP, **NEWER, **COMMON},
    "09_summary": {**PM, **PM_CBP, **COMMON},
}


def check_value(name: str, value, kind) -> object:
    """``value`` if it is of type ``kind`` (ints pass for floats), else a ``TypeError``
    naming the parameter, the type it needs and how to pass it with papermill."""
    if _fits(value, kind):
        return float(value) if kind is float else value
    hint = ""
    if typing.get_origin(kind) is list:
        hint = (f"; papermill's -p passes a string: pass lists with -y, e.g. "
                f"-y '{name}: [1, 2]'")
    raise TypeError(f"parameter {name} must be {_describe(kind)}, got {value!r} "
                    f"({type(value).__name__}){hint}")


def _fits(value, kind) -> bool:
    if isinstance(kind, tuple):
        return any(_fits(value, k) for k in kind)
    if typing.get_origin(kind) is list:
        (inner,) = typing.get_args(kind)
        return isinstance(value, list) and bool(value) and all(_fits(v, inner)
                                                              for v in value)
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
        plural = {int: "integers", float: "numbers", str: "strings"}.get(inner,
                                                                       str(inner))
        return f"a non-empty list of {plural}"
    if kind is type(None):
        return "None"
    names = {int: "an integer", float: "a number", str: "a string",
             bool: "True or False"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def resolve(chapter: str, scale: str, given: dict | None = None,
            override: bool = True) -> types.SimpleNamespace:
    """A chapter's settings at ``scale``: each knob's preset, replaced by the ``given``
    value when that is not None (checked against the knob's type). ``override``:
    ``$LOPBOOK_SCALE``, when set, wins over ``scale``."""
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; known: {', '.join(CHAPTERS)}")
    scale = resolve_scale(scale, override)
    knobs = CHAPTERS[chapter]
    given = dict(given or {})
    unknown = sorted(set(given) - set(knobs))
    if unknown:
        raise ValueError(f"{chapter} has no parameter {', '.join(unknown)}; its "
                         f"parameters are scale, {', '.join(knobs)}")
    values = {}
    for name, knob in knobs.items():
        value = given.get(name)
        values[name] = knob.at(scale) if value is None else check_value(name, value,
                                                                        knob.type)
    if set(PM) <= set(knobs):
        values.update({k: v[scale] for k, v in PM_FIXED.items()})
        values["utility"] = UTILITY[scale]
    if chapter == "02_continual_imagenet":
        values.update({k: v[scale] for k, v in IMAGENET_FIXED.items()})
    if chapter in ("02_continual_imagenet", "07_slowly_changing_regression"):
        values["utility"] = UTILITY[scale]
    if values.get("out_dir") is None:
        root = os.environ.get("LOPBOOK_RESULTS") or "results"
        values["out_dir"] = os.path.join(root, TOPICS.get(chapter, "permuted_mnist"))
    return types.SimpleNamespace(scale=scale, **values)


def permuted_mnist(P, label: str = "Backprop") -> PermutedMNIST:
    """The shared Permuted MNIST config of settings ``P`` (from :func:`resolve`)."""
    return PermutedMNIST(tasks=P.tasks, examples_per_task=P.examples_per_task,
                         width=P.width, step_size=P.step_size,
                         metrics_every=P.metrics_every, probe_size=P.probe_size,
                         init=P.init, label=label)


def continual_imagenet(P) -> ContinualImageNet:
    """Chapter 2's base config of settings ``P``."""
    return ContinualImageNet(tasks=P.tasks, epochs=P.epochs, batch_size=P.batch_size,
                             momentum=P.momentum, train_per_class=P.train_per_class,
                             test_per_class=P.test_per_class,
                             metrics_every=P.metrics_every, data=P.data,
                             pairing=P.pairing, init=P.init)


def slowly_changing_regression(P, activation: str = "relu", label: str = "Backprop",
                               step_size: float | None = None
                               ) -> SlowlyChangingRegression:
    """Chapter 7's base config of settings ``P``, for one activation function (at
    ``step_size``, else the first of ``P.step_sizes``)."""
    step_size = P.step_sizes[0] if step_size is None else step_size
    return SlowlyChangingRegression(tasks=P.bins, examples_per_task=P.bin_size,
                                    step_size=step_size, activation=activation,
                                    depth=0 if activation == "linear" else 1,
                                    label=label)


def settings(scale: str, given: dict, **presets: dict) -> types.SimpleNamespace:
    """Settings from ad-hoc presets (earlier versions' notebooks): the preset of the
    resolved scale, overridden by every ``given`` value that is not None.

    >>> P = settings("quick", dict(tasks=None, runs=3), quick=dict(tasks=60, runs=2))
    >>> P.scale, P.tasks, P.runs
    ('quick', 60, 3)
    """
    scale = resolve_scale(scale)
    if scale not in presets:
        raise ValueError(f"no settings for scale {scale!r}; this notebook has "
                         f"{sorted(presets)}")
    values = dict(presets[scale])
    values.update({k: v for k, v in given.items() if v is not None})
    return types.SimpleNamespace(scale=scale, **values)
