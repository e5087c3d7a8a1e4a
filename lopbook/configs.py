"""Configs: what one run is, as a plain dataclass with the paper's settings as defaults.

A config names its learning method (:mod:`lopbook.methods`) and the method's
hyperparameters, the optimiser, the network and the problem. Change one with
:func:`dataclasses.replace`, and choose a method with :meth:`Learning.with_method`:

>>> base = PermutedMNIST(tasks=60, examples_per_task=2000, width=100, step_size=0.03)
>>> cbp = base.with_method("continual_backprop", replacement_rate=1e-3)
>>> cbp.name, cbp.method_settings().maturity_threshold
('Continual backprop', 100)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from . import methods as registry
from .methods.base import Hyperparameters

__all__ = [
    "SlowlyChangingRegression",
    "Learning",
    "PermutedMNIST",
    "ContinualImageNet",
    "runs",
    "run_key",
    "CONFIGS",
    "KEY_VERSION",
]

#: bumped whenever a change of the code changes the numbers of existing runs
KEY_VERSION = 2


@dataclass
class Learning:
    """The learner's settings, shared by every experiment."""

    method: str = "backprop"
    """the learning method, a name in lopbook.methods.REGISTRY"""
    hyperparameters: dict = field(default_factory=dict)
    """the method's hyperparameters that differ from its defaults"""
    seed: int = 0
    """seeds the network, the data stream and every random draw of the run"""
    step_size: float = 0.003
    """the step size (learning rate)"""
    optimizer: str = "sgd"
    """'sgd' or 'adam'"""
    momentum: float = 0.0
    """SGD's momentum"""
    betas: tuple = (0.9, 0.999)
    """Adam's betas"""
    dropout: float = 0.0
    """dropout probability of every hidden unit"""
    norm: str | None = None
    """None, 'layer' or 'batch' (normalisation before every ReLU)"""
    init: str = "kaiming"
    """the networks' initialisation (lopbook.nets.INITS)"""
    label: str = ""
    """name in plots; empty: made from the settings"""

    #: the experiment's own defaults of a method's hyperparameters (the paper's)
    METHOD_DEFAULTS: ClassVar[dict[str, dict]] = {}
    #: the loss the networks learn from
    LOSS: ClassVar[str] = "cross_entropy"

    def with_method(self, method: str, label: str = "", **hyperparameters):
        """This config with another method and its hyperparameters (checked now)."""
        changed = dataclasses.replace(
            self, method=method, hyperparameters=hyperparameters, label=label
        )
        changed.method_settings()
        return changed

    def method_settings(self) -> Hyperparameters:
        """The method's hyperparameters: its defaults, this experiment's, then ours."""
        values = {**self.METHOD_DEFAULTS.get(self.method, {}), **self.hyperparameters}
        try:
            return registry.settings(self.method, **values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{type(self).__name__}: {err}") from None

    @property
    def algorithm(self) -> str:
        """The method's name (the field's name in earlier versions)."""
        return self.method

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        name = (
            registry.get(self.method).label
            if self.method in registry.REGISTRY
            else self.method
        )
        if self.optimizer == "adam":
            name = "Adam" if self.method == "backprop" else f"{name} (Adam)"
        if self.dropout:
            name += f", dropout {self.dropout:g}"
        if self.norm:
            name += f", {self.norm} norm"
        return name

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad setting and what is allowed."""

        def need(ok, message):
            if not ok:
                raise ValueError(f"{type(self).__name__}({self.name}): {message}")

        need(
            isinstance(self.hyperparameters, dict),
            "hyperparameters must be a dict of the method's hyperparameters",
        )
        self.method_settings()
        need(
            isinstance(self.seed, (int, np.integer))
            and not isinstance(self.seed, bool)
            and self.seed >= 0,
            f"seed must be a non-negative integer, got {self.seed!r}",
        )
        need(
            _number(self.step_size) and self.step_size > 0,
            f"step_size must be a positive number, got {self.step_size!r}",
        )
        need(
            self.optimizer in ("sgd", "adam"),
            f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}",
        )
        need(
            _number(self.momentum) and 0 <= self.momentum < 1,
            f"momentum must be in [0, 1), got {self.momentum!r}",
        )
        need(
            self.optimizer == "sgd" or self.momentum == 0,
            "momentum is an SGD setting (Adam uses betas)",
        )
        need(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"betas must be two numbers in [0, 1), got {self.betas!r}",
        )
        need(
            _number(self.dropout) and 0 <= self.dropout < 1,
            f"dropout must be in [0, 1), got {self.dropout!r}",
        )
        need(
            self.norm in (None, "layer", "batch"),
            f"norm must be None, 'layer' or 'batch', got {self.norm!r}",
        )
        for name in ("tasks", "metrics_every", "probe_size"):
            value = getattr(self, name)
            need(
                isinstance(value, (int, np.integer)) and not isinstance(value, bool),
                f"{name} must be an integer, got {value!r}",
            )
        need(self.tasks >= 1, f"tasks must be >= 1, got {self.tasks}")
        need(self.metrics_every >= 0, "metrics_every must be >= 0 (0: never)")
        need(self.probe_size >= 1, "probe_size must be >= 1")

    def run_settings(self):
        """What the lockstep engine needs to know of this run."""
        from .engine import RunSettings
        from .runtime import derive_seed

        return RunSettings(
            seed=derive_seed(self.seed, 1),
            step_size=self.step_size,
            momentum=self.momentum,
            method=self.method,
            hyperparameters=self.method_settings(),
        )

    def learner(self, net):
        """The reference learner for this config (:class:`lopbook.learners.Learner`)."""
        from .learners import Learner
        from .runtime import derive_seed

        hp = dataclasses.asdict(self.method_settings())
        momentum = dict(momentum=self.momentum) if self.optimizer == "sgd" else {}
        return Learner(
            net,
            self.step_size,
            method=self.method,
            optimizer=self.optimizer,
            betas=tuple(self.betas),
            seed=derive_seed(self.seed, 1),
            loss=self.LOSS,
            **momentum,
            **hp,
        )

    def group_key(self) -> tuple:
        """Runs with equal keys can be trained together in lockstep."""
        per_run = {
            "method",
            "hyperparameters",
            "seed",
            "label",
            "step_size",
            "momentum",
        }
        return tuple(
            (f.name, _plain(getattr(self, f.name)))
            for f in dataclasses.fields(self)
            if f.name not in per_run
        )


def _number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )


def _plain(value):
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v)) for k, v in value.items()))
    return value


@dataclass
class PermutedMNIST(Learning):
    """One run of Online Permuted MNIST. Defaults: the paper's setting (800 tasks of
    60,000 examples, one at a time, network 784-2000-2000-2000-10, step size 0.003).

    ``data``: ``"auto"`` (MNIST's training split if available, else its test split,
    else scikit-learn's 8x8 digits with a warning), ``"train"``, ``"test"`` or
    ``"digits"``.
    """

    tasks: int = 800
    """tasks (pixel permutations) per run"""
    examples_per_task: int = 60_000
    """examples, one at a time, before the permutation changes"""
    width: int = 2000
    """hidden units per layer"""
    depth: int = 3
    """hidden layers"""
    metrics_every: int = 1
    """measure the plasticity metrics at the start of every k-th task (0: never)"""
    probe_size: int = 2000
    """examples of the new task the metrics are measured on"""
    data: str = "auto"
    """'auto', 'train', 'test' or 'digits'"""

    def validate(self) -> None:
        super().validate()
        for name in ("examples_per_task", "width", "depth"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"PermutedMNIST({self.name}): {name} must be an integer >= 1, "
                    f"got {value!r}"
                )
        if self.data not in ("auto", "train", "test", "digits"):
            raise ValueError(
                "PermutedMNIST: data must be 'auto', 'train', 'test' or 'digits', "
                f"got {self.data!r}"
            )
        if self.norm == "batch":
            raise ValueError(
                "PermutedMNIST learns from one example at a time, where batch norm "
                "cannot work (each unit would be normalised by its own single "
                "value); use norm='layer'"
            )


@dataclass
class ContinualImageNet(Learning):
    """One run of Continual ImageNet: binary tasks on pairs of classes, the output layer
    reset at each task. Defaults: the paper's setting (2,000 tasks, 250 epochs of
    mini-batches of 100, SGD with momentum 0.9, step size 0.01).

    ``data``: ``"auto"`` (ImageNet 32x32 if ``$LOPBOOK_IMAGENET`` or ``data_dir`` is
    given, else Tiny ImageNet if ``$LOPBOOK_TINYIMAGENET`` is, else CIFAR-100, else
    MNIST digits as classes, with a warning), ``"imagenet"``, ``"tinyimagenet"``,
    ``"cifar100"`` or ``"digits"``.
    """

    step_size: float = 0.01
    momentum: float = 0.9
    tasks: int = 2000
    """binary tasks (pairs of classes) per run"""
    epochs: int = 250
    """passes over a task's training images"""
    batch_size: int = 100
    """images per mini-batch"""
    train_per_class: int = 0
    """use only the first k training images of each class (0: all of them)"""
    test_per_class: int = 0
    """likewise for the test images (0: all of them)"""
    metrics_every: int = 0
    """measure the plasticity metrics at the start of every k-th task (0: never)"""
    probe_size: int = 1000
    """training images of the new task the metrics are measured on"""
    data: str = "auto"
    """'auto', 'imagenet', 'tinyimagenet', 'cifar100' or 'digits'"""
    pairing: str = "order"
    """'order' (the paper's: consecutive pairs of one class order, repeating) or
    'random' (a fresh random pair of classes for every task)"""

    METHOD_DEFAULTS: ClassVar[dict[str, dict]] = {
        "l2": dict(weight_decay=3e-6),
        "shrink_and_perturb": dict(weight_decay=1e-5, noise_std=1e-5),
        "continual_backprop": dict(replacement_rate=3e-4),
    }

    def validate(self) -> None:
        super().validate()
        if self.train_per_class < 0 or self.test_per_class < 0:
            raise ValueError(
                "train_per_class and test_per_class must be >= 0 (0: all images)"
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"ContinualImageNet({self.name}): epochs and batch_size must be >= 1"
            )
        if self.data not in ("auto", "imagenet", "tinyimagenet", "cifar100", "digits"):
            raise ValueError(
                "ContinualImageNet: data must be 'auto', 'imagenet', 'tinyimagenet', "
                f"'cifar100' or 'digits', got {self.data!r}"
            )
        if self.norm == "layer":
            raise ValueError("the ConvNet supports norm=None or 'batch'")
        if self.pairing not in ("order", "random"):
            raise ValueError(
                f"pairing must be 'order' or 'random', got {self.pairing!r}"
            )


@dataclass
class SlowlyChangingRegression(Learning):
    """One run of the slowly-changing regression problem (Nature, Methods and Extended
    Data Fig. 2): a network with one hidden layer of 5 units learns online, by SGD on
    the squared error, to track a fixed random target network of linear threshold
    units whose input has 15 slowly changing bits (one flipped every 10,000 examples)
    and 5 random ones. Defaults: the paper's (3 million examples, the error reported
    in bins of 40,000; step size 0.01).

    The stream has no tasks: a "task" here is a bin of ``examples_per_task`` examples,
    the unit in which the error is reported and progress is saved.
    """

    step_size: float = 0.01
    init: str = "kaiming_linear_output"
    tasks: int = 75
    """bins of examples_per_task examples (75 x 40,000 = 3 million)"""
    examples_per_task: int = 40_000
    """examples per bin: the online squared error is averaged over each bin"""
    width: int = 5
    """hidden units of the learner"""
    depth: int = 1
    """hidden layers of the learner (0: a linear model)"""
    activation: str = "relu"
    """the learner's activation function (lopbook.nets.ACTIVATIONS)"""
    n_inputs: int = 20
    """binary inputs (m), besides the constant bit"""
    n_slow: int = 15
    """of which slowly changing (f)"""
    target_width: int = 100
    """hidden linear threshold units of the target network"""
    beta: float = 0.7
    """sets the LTUs' thresholds"""
    change_every: int = 10_000
    """T: examples between two changes of the slow bits"""
    change: str = "flip_one"
    """'flip_one' (the paper's: one slow bit flipped) or 'redraw_all' (the authors'
    code's default)"""
    metrics_every: int = 1
    """measure the plasticity metrics at the start of every k-th bin (0: never)"""
    probe_size: int = 1000
    """examples of the bin the metrics are measured on"""
    data: str = "synthetic"
    """the stream is synthetic by design (a random target network)"""

    LOSS: ClassVar[str] = "squared_error"

    def validate(self) -> None:
        super().validate()
        from .nets import ACTIVATIONS

        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        for name in (
            "examples_per_task",
            "width",
            "n_inputs",
            "n_slow",
            "target_width",
            "change_every",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"SlowlyChangingRegression: {name} must be an integer >= 1, "
                    f"got {value!r}"
                )
        if not isinstance(self.depth, (int, np.integer)) or self.depth < 0:
            raise ValueError(f"depth must be an integer >= 0, got {self.depth!r}")
        if self.data != "synthetic":
            raise ValueError("SlowlyChangingRegression: data must be 'synthetic'")
        if self.norm == "batch":
            raise ValueError(
                "one example at a time: batch norm cannot work; use norm='layer'"
            )


#: every config class, by name (to read saved results back)
CONFIGS: dict[str, type[Learning]] = {
    c.__name__: c for c in (PermutedMNIST, ContinualImageNet, SlowlyChangingRegression)
}


def runs(config, n: int, first_seed: int = 0) -> list:
    """``n`` copies of ``config`` with seeds ``first_seed, first_seed + 1, ...``."""
    return [dataclasses.replace(config, seed=first_seed + i) for i in range(n)]


def key_settings(config) -> dict:
    """What makes a run's numbers: every field that differs from its default (the label
    aside), and every method hyperparameter that differs from the method's default.

    Adding a field with a default therefore leaves the keys of existing runs as they
    were.
    """
    defaults = type(config)()
    found = {}
    for f in dataclasses.fields(config):
        value = _jsonable(getattr(config, f.name))
        if f.name in ("label", "hyperparameters") or value == _jsonable(
            getattr(defaults, f.name)
        ):
            continue
        found[f.name] = value
    settings = config.method_settings()
    plain = type(settings)()
    hp = {
        f.name: _jsonable(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if getattr(settings, f.name) != getattr(plain, f.name)
    }
    if hp:
        found["hyperparameters"] = hp
    return found


def run_key(config, data_identity: str = "") -> str:
    """A directory name for a run: readable, and unique to its numbers (its settings,
    seed and data), so runs with the same settings but different labels share it."""
    described = {
        "v": KEY_VERSION,
        "settings": key_settings(config),
        "data": data_identity,
    }
    digest = hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[
        :12
    ]
    return f"{type(config).__name__.lower()}-{config.method}-seed{config.seed}-{digest}"


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in sorted(value.items())}
    return value


def config_from_dict(kind: str, values: dict):
    """Rebuild a config from :func:`dataclasses.asdict` output (as saved in result
    files)."""
    if kind not in CONFIGS:
        raise ValueError(f"unknown experiment {kind!r}; known: {', '.join(CONFIGS)}")
    cls = CONFIGS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{kind} has no settings {unknown}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**fixed)
