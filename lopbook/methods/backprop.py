"""Plain backpropagation: the gradient step and nothing else."""

from __future__ import annotations

import dataclasses

from .base import Hyperparameters, Method

__all__ = ["Backprop"]


@dataclasses.dataclass(frozen=True)
class BackpropSettings(Hyperparameters):
    """Backprop has no hyperparameters of its own (the step size and the
    optimiser are the trainer's)."""


class Backprop(Method):
    """Stochastic gradient descent (or Adam) on the loss: the base of every method."""

    name = "backprop"
    label = "Backprop"
    Settings = BackpropSettings
