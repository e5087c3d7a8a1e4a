"""ReDo (Sokar, Agarwal, Castro and Evci, 2023): recycle dormant units every F steps.

A hidden unit's score is its mean absolute activation divided by the mean of that
over its layer,

    s_i = E|h_i| / ((1 / H) sum_k E|h_k|),

and a unit with s_i <= tau is *tau-dormant*. Every ``period`` steps each dormant unit
gets fresh incoming weights drawn as at initialisation, a zero bias and zero outgoing
weights, and the optimiser state of those weights is cleared.

Online (one example per step) there is no batch to take the expectation over, so E is
the mean over the ``period`` steps since the last check (our choice: the paper scores a
batch of 256 samples from the replay buffer).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .base import Hyperparameters, Method, require

__all__ = ["ReDo"]


@dataclasses.dataclass(frozen=True)
class ReDoSettings(Hyperparameters):
    threshold: float = 0.025
    """tau: a unit is dormant when its score is at most tau (0 catches exactly the
    units that were zero on every step). 0.025 in the paper's main experiments; 0.1
    did best in Dohare et al.'s reinforcement-learning comparison."""
    period: int = 1000
    """F: steps between two recyclings (the paper's 1,000 gradient steps)."""

    PER_RUN = ("threshold",)

    def check(self) -> None:
        require(self.threshold >= 0, f"threshold must be >= 0, got {self.threshold}")
        require(
            isinstance(self.period, (int, np.integer)) and self.period >= 1,
            f"period must be an integer >= 1, got {self.period}",
        )


class ReDo(Method):
    """Recycling dormant neurons: reinitialise the units whose activity is a small
    fraction of their layer's average."""

    name = "redo"
    label = "ReDo"
    Settings = ReDoSettings

    def __init__(self, nets, settings):
        super().__init__(nets, settings)
        R = nets.runs
        dtype = nets.weights[0].dtype
        # sum of |h| of every unit since the last check
        self.activity = [
            torch.zeros(R, n, device=nets.device, dtype=dtype)
            for n in nets.hidden_sizes
        ]
        self.tau = torch.tensor(self.per_run("threshold"), device=nets.device).view(
            R, 1
        )
        self.recycled = np.zeros((R, len(nets.hidden_sizes)), dtype=np.int64)
        self.state = dict(activity=self.activity, recycled=self.recycled)

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        for l, h in enumerate(hidden):
            dims = [1] + list(range(3, h.dim()))  # the batch (and space) axes
            self.activity[l] += h.abs().sum(dim=dims)
        if self.nets.step % self.hp.period == 0:
            for l in range(len(hidden)):
                self.recycle(l, self.dormant(l))
                self.activity[l].zero_()

    def dormant(self, l: int) -> torch.Tensor:
        """Which units of hidden layer ``l`` are tau-dormant, ``[runs, units]``."""
        activity = self.activity[l]
        score = activity / (activity.mean(dim=1, keepdim=True) + 1e-9)
        return score <= self.tau

    def recycle(self, l: int, dormant: torch.Tensor) -> None:
        """Fresh incoming weights, zero bias and outgoing weights for dormant units."""
        run, units = torch.nonzero(dormant, as_tuple=True)  # run after run
        if len(units) == 0:
            return
        runs, counts = np.unique(run.cpu().numpy(), return_counts=True)
        self.nets.reinitialise_units(l, runs, counts, units)
        self.recycled[runs, l] += counts
