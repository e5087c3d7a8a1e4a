"""Plasticity metrics: dead units, average weight magnitude and effective rank.

All three are computed on a fixed probe batch of inputs, as in the paper (2,000
examples of the new task, at the start of each task).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .nets import activate

__all__ = [
    "effective_rank",
    "dead_units",
    "inactive_units",
    "weight_magnitude",
    "PlasticityMetrics",
    "plasticity_metrics",
    "metrics_from_activations",
]


def effective_rank(features: torch.Tensor) -> float:
    """Effective rank of a matrix (Roy and Vetterli, 2007).

    With singular values sigma_k and p_k = sigma_k / sum_j sigma_j, the effective
    rank is exp(-sum_k p_k log p_k): the exponential of the entropy of the normalised
    singular values. It lies between 1 and the rank, equals the rank when all non-zero
    singular values are equal, and is 0 for an all-zero matrix (NaN if the matrix
    holds inf or NaN). ``features`` is ``[examples, units]``; further axes are
    flattened into units.
    """
    matrix = features.reshape(features.shape[0], -1).double()
    if not torch.isfinite(matrix).all():
        return float("nan")  # a diverged network has no meaningful rank
    sigma = torch.linalg.svdvals(matrix)
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def dead_units(activation: torch.Tensor) -> int:
    """Number of units whose activation is zero on every example.

    ``activation`` is ``[examples, units, ...]``: a conv unit is a channel, dead when
    it is zero at every position of every example."""
    per_unit = activation.transpose(0, 1).reshape(activation.shape[1], -1)
    return int((per_unit == 0).all(dim=1).sum())


def inactive_units(z: torch.Tensor, activation: str, tolerance: float = 0.01) -> int:
    """Number of units that pass (almost) no gradient on any example: the derivative
    of ``activation`` at their pre-activations ``z`` (``[examples, units]``) is below
    ``tolerance`` times its largest value on every example.

    For ReLU these are exactly the dead units; for tanh and sigmoid the saturated
    ones (tanh: |h| > 0.995); a leaky ReLU (slope 0.01) or linear unit never is."""
    with torch.enable_grad():
        z = z.detach().double().requires_grad_(True)
        (derivative,) = torch.autograd.grad(activate(z, activation).sum(), z)
    largest = {"sigmoid": 0.25, "swish": 1.0998}.get(activation, 1.0)
    small = derivative.abs() < tolerance * largest
    return int(small.reshape(z.shape[0], z.shape[1], -1).all(dim=2).all(dim=0).sum())


def weight_magnitude(weights: list[torch.Tensor]) -> tuple[list[float], float]:
    """Mean absolute weight of each tensor, and over all their entries together."""
    per_layer = [float(w.abs().mean()) for w in weights]
    total = float(sum(w.abs().sum() for w in weights) / sum(w.numel() for w in weights))
    return per_layer, total


@dataclass
class PlasticityMetrics:
    """The three metrics of one network; per-layer lists run over the hidden layers
    (weights: over all layers)."""

    dead_percent: list[float]
    """percent of each hidden layer's units that are dead (other activations than
    ReLU: inactive, see inactive_units)"""
    dead_percent_total: float
    """percent of all hidden units that are dead"""
    effective_rank: list[float]
    """effective rank of each hidden layer's representation"""
    effective_rank_percent: list[float]
    """the same, as a percent of its largest possible value"""
    weight_magnitude: list[float]
    """mean |w| of each weight layer (the output layer included, biases excluded)"""
    weight_magnitude_total: float
    """mean |w| over all weights"""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def metrics_from_activations(
    hidden: list[torch.Tensor],
    weights: list[torch.Tensor],
    pre: list[torch.Tensor] | None = None,
    activation: str = "relu",
) -> PlasticityMetrics:
    """The metrics from a network's hidden activations on the probe batch and its
    weights (``pre``: the pre-activations, needed for activations other than ReLU)."""
    if activation == "relu":
        dead = [dead_units(h) for h in hidden]
    else:
        dead = [inactive_units(z, activation) for z in pre]
    widths = [h.shape[1] for h in hidden]
    ranks = [effective_rank(h) for h in hidden]
    rank_max = [min(h.shape[0], h[0].numel()) for h in hidden]
    per_layer, total = weight_magnitude(weights)
    return PlasticityMetrics(
        dead_percent=[100.0 * d / w for d, w in zip(dead, widths)],
        dead_percent_total=100.0 * sum(dead) / sum(widths) if widths else float("nan"),
        effective_rank=ranks,
        effective_rank_percent=[100.0 * r / m for r, m in zip(ranks, rank_max)],
        weight_magnitude=per_layer,
        weight_magnitude_total=total,
    )


@torch.no_grad()
def plasticity_metrics(net: nn.Module, probe: torch.Tensor) -> PlasticityMetrics:
    """Dead units, effective rank and weight magnitude of ``net`` on the ``probe``
    inputs (in eval mode)."""
    was_training = net.training
    net.eval()
    try:
        _, hidden = net(probe, return_hidden=True)
        activation = getattr(net, "activation", "relu")
        pre = None
        if activation != "relu":  # the MLP's pre-activations, layer by layer
            pre, h = [], probe
            for l, layer in enumerate(net.hidden):
                pre.append(net._normalise(l, layer(h)))
                h = hidden[l]
    finally:
        net.train(was_training)
    weights = [layer.weight for layer in net.weight_layers()]
    return metrics_from_activations(hidden, weights, pre, activation)


def stack_metrics(history: list[PlasticityMetrics]) -> dict[str, np.ndarray]:
    """A list of metrics (one per task) as arrays: ``[tasks]`` for totals and
    ``[tasks, layers]`` for per-layer ones."""
    return {
        key: np.asarray([getattr(m, key) for m in history], dtype=float)
        for key in PlasticityMetrics.__dataclass_fields__
    }
