"""The paper's experiments, each a module, and the functions that run them.

:func:`run_permuted_mnist` and :func:`run_continual_imagenet` take configs
(:mod:`lopbook.configs`) and options (:class:`~lopbook.runner.RunOptions`, or its fields
as keyword arguments) and return one :class:`~lopbook.results.RunResult` per config.
"""

from __future__ import annotations

from ..configs import ContinualImageNet, PermutedMNIST, SlowlyChangingRegression, runs
from ..presets import SCALES, resolve_scale, settings
from ..runner import RunOptions, run
from . import continual_imagenet, permuted_mnist, slowly_changing_regression
from .continual_imagenet import linear_baseline

__all__ = [
    "PermutedMNIST",
    "ContinualImageNet",
    "SlowlyChangingRegression",
    "run_slowly_changing_regression",
    "run_permuted_mnist",
    "run_continual_imagenet",
    "linear_baseline",
    "runs",
    "run",
    "RunOptions",
    "SCALES",
    "resolve_scale",
    "settings",
    "EXPERIMENTS",
]

#: the module that trains each config class, by the class's name
EXPERIMENTS = {
    "PermutedMNIST": permuted_mnist,
    "ContinualImageNet": continual_imagenet,
    "SlowlyChangingRegression": slowly_changing_regression,
}


def run_permuted_mnist(configs, options: RunOptions | None = None, **overrides):
    """Run Online Permuted MNIST for every config (a :class:`PermutedMNIST` or a list).

    ``options`` (or keyword arguments with its field names: ``out_dir``, ``data_dir``,
    ``device``, ``backend``, ``workers``, ``progress``, ``checkpoint_every``): see
    :class:`~lopbook.runner.RunOptions`. ``accuracy`` is the online accuracy of each
    task.
    """
    return _run(configs, PermutedMNIST, options, overrides)


def run_continual_imagenet(configs, options: RunOptions | None = None, **overrides):
    """Run Continual ImageNet for every config (a :class:`ContinualImageNet` or a list).

    ``accuracy`` is the test accuracy on each task's held-out images after training on
    it; ``train_accuracy`` the accuracy on the training batches of the task's last
    epoch. Options as in :func:`run_permuted_mnist` (``data_dir``: the class files).
    """
    return _run(configs, ContinualImageNet, options, overrides)


def run_slowly_changing_regression(
    configs, options: RunOptions | None = None, **overrides
):
    """Run the slowly-changing regression problem for every config (a
    :class:`SlowlyChangingRegression` or a list). ``accuracy`` holds each bin's mean
    online squared error (``meta["measure"]`` says so). Options as in
    :func:`run_permuted_mnist`."""
    return _run(configs, SlowlyChangingRegression, options, overrides)


def _run(configs, kind, options, overrides):
    listed = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    for cfg in listed:
        if not isinstance(cfg, kind):
            raise TypeError(
                f"expected {kind.__name__} configs, got {type(cfg).__name__}"
            )
    return run(listed, options, **overrides)
