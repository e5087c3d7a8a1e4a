"""Weight clipping (Elsayed, Lan, Lyle and Mahmood, 2024): keep every weight inside a
multiple of the range it was initialised in.

After every optimiser step each weight and bias of layer ``l`` is clipped,

    w <- clip(w, -kappa * s_l, kappa * s_l),

where ``s_l`` is the half-width of the uniform distribution layer ``l``'s weights were
drawn from (:attr:`~lopbook.methods.base.Networks.init_bounds`) and ``kappa >= 1`` the
single hyperparameter. The optimiser and its state are left alone.

As in the authors' code (github.com/mohmdelsayed/weight-clipping,
``core/optim/weight_clipping.py``), a bias is clipped with the bound of its own layer's
weights (our biases start at zero, so they have no range of their own), and the output
layer is clipped too (their ``clip_last_layer``, on by default and in their best
Permuted MNIST runs). Their networks use PyTorch's default initialisation, so their
``s_l`` is ``1 / sqrt(fan_in)``; ours is the bound of *our* initialisation (Kaiming:
``sqrt(6 / fan_in)``), which is what the paper's rule asks for. Layer norm's gains and
shifts are not clipped: they are not drawn from a range (gains start at 1, shifts at
0), and the paper's networks have none.

Reference: M. Elsayed, Q. Lan, C. Lyle, A. R. Mahmood, "Weight Clipping for Deep
Continual and Reinforcement Learning", Reinforcement Learning Journal 5 (2024),
2198-2217; arXiv:2407.01704.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import Hyperparameters, Method, require

__all__ = ["WeightClipping"]


@dataclasses.dataclass(frozen=True)
class WeightClippingSettings(Hyperparameters):
    kappa: float = 2.0
    """kappa: weights are kept within kappa times their layer's initial bound (1 means
    never leaving the initial range). 2 was best with SGD on input-permuted MNIST in
    the authors' runs (their grid: 1 to 5; 1 with Adam)."""
    clip_output: bool = True
    """whether the output layer is clipped too (the authors' ``clip_last_layer``,
    True by default and in their best runs)."""

    PER_RUN = ("kappa",)

    def check(self) -> None:
        require(self.kappa >= 1, f"kappa must be >= 1, got {self.kappa}")
        require(
            isinstance(self.clip_output, bool),
            f"clip_output must be True or False, got {self.clip_output!r}",
        )


class WeightClipping(Method):
    """Clip every weight and bias to [-kappa s_l, kappa s_l] after every step."""

    name = "weight_clipping"
    label = "Weight clipping"
    Settings = WeightClippingSettings

    def __init__(self, nets, settings):
        super().__init__(nets, settings)
        L = len(nets.weights)
        self.layers = range(L if self.hp.clip_output else L - 1)
        # kappa * s_l, shaped to broadcast over each layer's weights and biases
        self.bounds = [
            (
                self.column("kappa", nets.weights[l]) * nets.init_bounds[l],
                self.column("kappa", nets.biases[l]) * nets.init_bounds[l],
            )
            for l in self.layers
        ]

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        for l, (w_bound, b_bound) in zip(self.layers, self.bounds):
            self.nets.weights[l].clamp_(-w_bound, w_bound)
            self.nets.biases[l].clamp_(-b_bound, b_bound)

    def clipped_fraction(self) -> torch.Tensor:
        """Fraction of each run's clipped parameters that sit on their bound, ``[runs]``
        (the diagnostic the authors log)."""
        at_bound, total = 0, 0
        for l, (w_bound, b_bound) in zip(self.layers, self.bounds):
            for p, bound in (
                (self.nets.weights[l], w_bound),
                (self.nets.biases[l], b_bound),
            ):
                at_bound = at_bound + (p.abs() >= bound).flatten(1).sum(1)
                total += p[0].numel()
        return at_bound / total
