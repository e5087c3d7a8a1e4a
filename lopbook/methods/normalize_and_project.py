"""Normalize-and-Project, NaP (Lyle et al., 2024): layer norm before every nonlinearity,
and every hidden layer's weights projected back to their initial norm after each step.

With layer norm after it, a hidden layer's output does not change when its weights
are scaled, ``LN(c W h) = LN(W h)``, but the effective step size of those weights falls
as ``1 / ||W||^2``: the growth of the weights quietly anneals learning. NaP keeps the
norm of each hidden layer fixed, so the effective step size stays what it was:

    W_l <- (||W_l^0|| / ||W_l||) W_l        after every step, per run and layer,

with ``||.||`` the Frobenius norm and ``W_l^0`` the layer at initialisation. The output
layer, which is not followed by a normalisation, is not projected.

Two details for our networks:

* The paper removes the biases that normalisation makes redundant. Ours keep theirs,
  and ``LN(c (W h + b)) = LN(W h + b)`` holds only when the bias is scaled with the
  weights, so a hidden layer's weights *and* bias are projected together, to the norm
  they had together at initialisation (the paper's rule when the bias is zero, as at
  our initialisation).
* Layer norm's gains and shifts are not scale-invariant; the paper treats them apart,
  by normalising them jointly or regularising them. With ``affine="project"`` (our
  default) each layer's pair (gain, shift) is projected jointly back to its initial
  norm (``sqrt(units)``: gains start at 1, shifts at 0); with ``affine="free"`` they
  are left to the optimiser. I could not see the paper's exact choice for this
  setting (it has no official code); it also pairs NaP with a step-size schedule in
  reinforcement learning, which is not part of this method.

The optimiser's state (momentum, Adam's moments) is not changed by the projection.

Reference: C. Lyle, Z. Zheng, K. Khetarpal, J. Martens, H. van Hasselt, R. Pascanu,
W. Dabney, "Normalization and effective learning rates in reinforcement learning",
NeurIPS 2024; arXiv:2407.01800.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import Hyperparameters, Method, require

__all__ = ["NormalizeAndProject"]

AFFINE = ("project", "free")


@dataclasses.dataclass(frozen=True)
class NormalizeAndProjectSettings(Hyperparameters):
    affine: str = "project"
    """what becomes of layer norm's gains and shifts: 'project' keeps each layer's
    (gain, shift) pair at its initial joint norm, 'free' leaves them alone."""

    def check(self) -> None:
        require(
            self.affine in AFFINE,
            f"affine must be one of {AFFINE}, got {self.affine!r}",
        )


class NormalizeAndProject(Method):
    """Project each hidden layer back to its initial norm after every step (layer
    norm nets only)."""

    name = "normalize_and_project"
    label = "Normalize-and-Project"
    Settings = NormalizeAndProjectSettings

    @classmethod
    def supports(cls, net, optimizer: str = "sgd", momentum: float = 0.0) -> str | None:
        if getattr(net, "norm", None) != "layer":
            return (
                "Normalize-and-Project needs layer norm before every nonlinearity "
                "(an MLP with norm='layer')"
            )
        return None

    def __init__(self, nets, settings):
        super().__init__(nets, settings)
        hidden = range(len(nets.hidden_sizes))
        self.groups = [(nets.weights[l], nets.biases[l]) for l in hidden]
        if self.hp.affine == "project":
            self.groups += [(nets.gains[l], nets.shifts[l]) for l in hidden]
        # the norm of each group at initialisation, [runs, groups] (checkpointed)
        self.initial_norms = torch.stack([_norm(g) for g in self.groups], dim=1)
        self.state = {"initial_norms": self.initial_norms}

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        for k, group in enumerate(self.groups):
            scale = self.initial_norms[:, k] / _norm(group)  # [runs]
            for p in group:
                p.mul_(scale.view(-1, *[1] * (p.dim() - 1)))


def _norm(group) -> torch.Tensor:
    """The Frobenius norm of a group of parameters taken together, per run
    (``[runs]``)."""
    return torch.stack([p.flatten(1).norm(dim=1) for p in group]).norm(dim=0)
