"""L2 Init (Kumar, Marklund and Van Roy, 2023): L2 towards the initial parameters."""

from __future__ import annotations

import dataclasses

import torch

from .base import Hyperparameters, Method, require

__all__ = ["L2Init"]


@dataclasses.dataclass(frozen=True)
class L2InitSettings(Hyperparameters):
    weight_decay: float = 1e-2
    """lambda: the loss gets (lambda / 2) * ||theta - theta_0||^2, so lambda * (theta -
    theta_0) is added to the gradient of every parameter, biases included. The paper
    writes lambda * ||theta - theta_0||^2; its code, whose lambdas it reports, halves
    it. 1e-2 was its best on its Permuted MNIST (mini-batches of 16)."""

    PER_RUN = ("weight_decay",)

    def check(self) -> None:
        require(
            self.weight_decay > 0,
            f"l2_init needs weight_decay > 0, got {self.weight_decay}",
        )


class L2Init(Method):
    """Regenerative regularisation: L2 towards the initial parameters, not zero."""

    name = "l2_init"
    label = "L2 Init"
    Settings = L2InitSettings

    def __init__(self, nets, settings):
        super().__init__(nets, settings)
        self.decay = [self.column("weight_decay", p) for p in nets.params]
        # theta_0: the parameters the networks start with (saved in checkpoints)
        self.initial = [p.detach().clone() for p in nets.params]
        self.state = {"initial": self.initial}

    def gradient(self, i: int, p: torch.Tensor, grad) -> torch.Tensor:
        return self.decay[i] * (p - self.initial[i])  # d/dp of (lambda / 2) (p - p0)^2
