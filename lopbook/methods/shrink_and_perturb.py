"""Shrink-and-Perturb (Ash and Adams, 2020): weight decay, and noise after each step."""

from __future__ import annotations

import dataclasses

import torch

from .base import Hyperparameters, Method, require

__all__ = ["ShrinkAndPerturb"]


@dataclasses.dataclass(frozen=True)
class ShrinkAndPerturbSettings(Hyperparameters):
    weight_decay: float = 1e-4
    """lambda of the shrink, an L2 penalty (the paper's Permuted MNIST value)."""
    noise_std: float = 1e-5
    """sigma: standard deviation of the Gaussian noise added to every weight and
    bias after every step (the paper tried 1e-4, 1e-5, 1e-6 on Permuted MNIST)."""

    PER_RUN = ("weight_decay", "noise_std")

    def check(self) -> None:
        require(
            self.weight_decay >= 0,
            f"weight_decay must be >= 0, got {self.weight_decay}",
        )
        require(self.noise_std >= 0, f"noise_std must be >= 0, got {self.noise_std}")


class ShrinkAndPerturb(Method):
    """Shrink (L2) every parameter through the gradient, then perturb it with noise."""

    #: its cost per step, roughly, in backprop steps (CPU, width 100)
    step_cost = 12.0

    name = "shrink_and_perturb"
    label = "Shrink and Perturb"
    Settings = ShrinkAndPerturbSettings

    def __init__(self, nets, settings):
        super().__init__(nets, settings)
        self.decay = [self.column("weight_decay", p) for p in nets.params]
        self.std = [self.column("noise_std", p) for p in nets.params]
        # one draw of noise per run and step, for all of the run's parameters at once
        sizes = [p[0].numel() for p in nets.params]
        self.noise = torch.zeros(
            nets.runs, sum(sizes), device=nets.device, dtype=nets.params[0].dtype
        )
        self.noise_views = [
            part.view(p.shape)
            for part, p in zip(self.noise.split(sizes, dim=1), nets.params)
        ]

    def gradient(self, i: int, p: torch.Tensor, grad) -> torch.Tensor:
        return self.decay[i] * p  # the shrink

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        for r, generator in enumerate(self.nets.generators):  # the perturbation
            self.noise[r].normal_(generator=generator)
        # every parameter p <- p + sigma * noise (one fused call for all of them)
        torch._foreach_add_(
            self.nets.params, torch._foreach_mul(self.noise_views, self.std)
        )
