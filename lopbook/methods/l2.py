"""L2 regularisation (weight decay): pull every parameter towards zero."""

from __future__ import annotations

import dataclasses

import torch

from .base import Hyperparameters, Method, require

__all__ = ["L2"]


@dataclasses.dataclass(frozen=True)
class L2Settings(Hyperparameters):
    weight_decay: float = 1e-4
    """lambda: the loss gets (lambda / 2) * ||theta||^2, so lambda * theta is added to
    the gradient of every parameter, biases included (as torch.optim's
    ``weight_decay`` does). The paper's Permuted MNIST values: 1e-3, 1e-4, 1e-5."""

    PER_RUN = ("weight_decay",)

    def check(self) -> None:
        require(
            self.weight_decay > 0, f"l2 needs weight_decay > 0, got {self.weight_decay}"
        )


class L2(Method):
    """Backprop on the loss plus (lambda / 2) * ||theta||^2 (Krogh and Hertz, 1992)."""

    name = "l2"
    label = "L2"
    Settings = L2Settings

    def __init__(self, nets, settings):
        super().__init__(nets, settings)
        self.decay = [self.column("weight_decay", p) for p in nets.params]

    def gradient(self, i: int, p: torch.Tensor, grad) -> torch.Tensor:
        return self.decay[i] * p  # d/dp of (lambda / 2) * p^2
