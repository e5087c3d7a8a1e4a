"""Continual backpropagation (Dohare et al., 2024): backprop plus selective
reinitialisation.

After every gradient step, for every hidden layer:

1. each unit's ``utility`` is updated, a running average of its contribution
   to the next layer (:meth:`ContinualBackprop.update_utility`);
2. ``replacement_rate`` times the number of *mature* units (older than
   ``maturity_threshold`` steps) is added to an accumulator, and its whole part
   is the number of units replaced now (:meth:`~ContinualBackprop.replacement_counts`);
3. that many mature units of lowest utility are reinitialised: fresh incoming
   weights drawn as at initialisation, zero bias, zero outgoing weights (so
   the network's output does not change), age and utility reset, their
   optimiser state cleared (:meth:`~ContinualBackprop.reinitialise`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .base import Hyperparameters, Method, require

__all__ = ["ContinualBackprop", "lowest_utility", "UTILITIES"]

UTILITIES = ("contribution", "adaptable")


@dataclasses.dataclass(frozen=True)
class ContinualBackpropSettings(Hyperparameters):
    replacement_rate: float = 1e-4
    """rho: fraction of a layer's mature units replaced per step (1e-4: the authors'
    Permuted MNIST configuration; 3e-4 on Continual ImageNet)."""
    maturity_threshold: int = 100
    """M (the paper's m): a unit can be replaced only once it is older than M steps
    (100 for Permuted MNIST and Continual ImageNet)."""
    decay_rate: float = 0.99
    """eta: decay of the running averages (about the last 1 / (1 - eta) steps)."""
    utility: str = "contribution"
    """'contribution', the paper's |h| * sum |w_out|, or 'adaptable', the authors'
    code's variant: |h - mean h| * mean |w_out| / mean |w_in|."""

    PER_RUN = ("replacement_rate",)

    def check(self) -> None:
        require(
            0 <= self.replacement_rate <= 1,
            f"replacement_rate must be in [0, 1], got {self.replacement_rate}",
        )
        require(
            isinstance(self.maturity_threshold, (int, np.integer))
            and self.maturity_threshold >= 0,
            "maturity_threshold must be an integer >= 0, "
            f"got {self.maturity_threshold}",
        )
        require(
            0 <= self.decay_rate < 1,
            f"decay_rate must be in [0, 1), got {self.decay_rate}",
        )
        require(
            self.utility in UTILITIES,
            f"utility must be one of {UTILITIES}, got {self.utility!r}",
        )


def lowest_utility(
    utility: torch.Tensor, eligible: torch.Tensor, k: int
) -> torch.Tensor:
    """Indices of the ``k`` eligible units of lowest utility in each row of
    ``utility`` (``[runs, units]``); ties go to the lower index."""
    scores = torch.where(eligible, utility, torch.full_like(utility, float("inf")))
    return torch.argsort(scores, dim=-1, stable=True)[..., :k]


class ContinualBackprop(Method):
    """Backprop plus a generate-and-test step that reinitialises low-utility units."""

    #: its cost per step, roughly, in backprop steps (CPU, width 100)
    step_cost = 5.0

    name = "continual_backprop"
    label = "Continual backprop"
    Settings = ContinualBackpropSettings

    def __init__(self, nets, settings):
        super().__init__(nets, settings)
        R, L = nets.runs, len(nets.hidden_sizes)
        zeros = [
            torch.zeros(R, n, device=nets.device, dtype=nets.weights[0].dtype)
            for n in nets.hidden_sizes
        ]
        self.utility = zeros
        self.mean_activation = [z.clone() for z in zeros]  # for the adaptable utility
        # a unit's age is the step count minus the step it was born at
        self.birth = [
            torch.zeros(R, n, dtype=torch.long, device=nets.device)
            for n in nets.hidden_sizes
        ]
        self.rate = self.per_run("replacement_rate")
        self.width = np.asarray(nets.hidden_sizes)
        self.accumulated = np.zeros((R, L))
        self.replacements = np.zeros((R, L), dtype=np.int64)  # units replaced so far
        # replacements of the last M steps, in a ring indexed by step % M
        maturity = self.hp.maturity_threshold
        self.recent = np.zeros((R, max(maturity, 1), L), dtype=np.int64)
        self.recent_sum = np.zeros((R, L), dtype=np.int64)
        self.state = dict(
            utility=self.utility,
            mean_activation=self.mean_activation,
            birth=self.birth,
            accumulated=self.accumulated,
            replacements=self.replacements,
            recent=self.recent,
            recent_sum=self.recent_sum,
        )

    def age(self, l: int) -> torch.Tensor:
        """Steps since each unit of hidden layer ``l`` was (re)initialised, ``[runs,
        units]``."""
        return self.nets.step - self.birth[l]

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        counts = self.replacement_counts()  # [runs, layers], on the host
        for l, h in enumerate(hidden):
            self.update_utility(l, h)
            if counts[:, l].any():
                self.reinitialise(l, counts[:, l])

    def update_utility(self, l: int, h: torch.Tensor) -> None:
        """u <- eta * u + (1 - eta) * contribution, for hidden layer ``l`` (activations
        ``h``: ``[runs, batch, units, ...]``)."""
        d, n = self.hp.decay_rate, h.shape[2]
        w_out = self.nets.outgoing(self.nets.weights[l + 1], n)
        dims = [1] + list(range(3, h.dim()))  # the batch (and space) axes
        if self.hp.utility == "contribution":
            size = h if self.nets.nonnegative else h.abs()  # ReLU outputs: |h| = h
            one = h.dim() == 3 and h.shape[1] == 1  # a single example: no mean to take
            activity = size[:, 0] if one else size.mean(dim=dims)
            contribution = activity * _abs_sum(w_out)  # |h| * sum_k |w_out|
        else:
            self.mean_activation[l].mul_(d).add_(h.mean(dim=dims), alpha=1 - d)
            mean = self.mean_activation[l] / (1 - d ** self.age(l))
            mean = mean.view(h.shape[0], 1, n, *[1] * (h.dim() - 3))
            deviation = (h - mean).abs().mean(dim=dims)
            w_in = self.nets.weights[l].abs().view(h.shape[0], n, -1).mean(dim=2)
            contribution = deviation * w_out.abs().mean(dim=(1, 3)) / w_in
        self.utility[l].mul_(d).add_(contribution, alpha=1 - d)

    def bias_corrected_utility(self, l: int) -> torch.Tensor:
        """The running average divided by 1 - eta^age (it starts at zero for a new unit;
        this correction comes from the authors' code)."""
        return self.utility[l] / (1 - self.hp.decay_rate ** self.age(l))

    def replacement_counts(self) -> np.ndarray:
        """How many units each run replaces in each hidden layer at this step.

        A unit is eligible once it is older than M (the maturity threshold) steps, so
        the eligible count is the width minus the units replaced in the last M
        steps: decided on the host, without reading the ages back from the device.
        """
        maturity, step = self.hp.maturity_threshold, self.nets.step
        eligible = self.width - self.recent_sum if step > maturity else 0
        self.accumulated += self.rate[:, None] * eligible
        counts = np.floor(self.accumulated).astype(np.int64)
        self.accumulated -= counts
        if maturity > 0:  # the ring forgets step - M
            slot = step % maturity
            self.recent_sum += counts - self.recent[:, slot]
            self.recent[:, slot] = counts
        return counts

    def reinitialise(self, l: int, counts: np.ndarray) -> None:
        """Replace ``counts[r]`` units of hidden layer ``l`` in each run ``r``: the
        mature units of lowest (bias-corrected) utility."""
        runs = np.flatnonzero(counts)
        counts = counts[runs]
        age = self.nets.step - self.birth[l][runs]
        utility = self.utility[l][runs] / (1 - self.hp.decay_rate**age)
        order = lowest_utility(
            utility, age > self.hp.maturity_threshold, int(counts.max())
        )
        device = self.nets.device
        which = torch.as_tensor(np.repeat(np.arange(len(runs)), counts), device=device)
        rank = torch.as_tensor(
            np.concatenate([np.arange(c) for c in counts]), device=device
        )
        self.replace(l, runs, counts, order[which, rank])

    def replace(
        self, l: int, runs: np.ndarray, counts: np.ndarray, units: torch.Tensor
    ) -> None:
        """Give run ``runs[i]`` ``counts[i]`` new units in hidden layer ``l``
        (``units``: their indices, run after run), with age and utility zero."""
        run = self.nets.reinitialise_units(l, runs, counts, units)
        self.utility[l][run, units] = 0.0
        self.mean_activation[l][run, units] = 0.0
        self.birth[l][run, units] = self.nets.step
        self.replacements[runs, l] += counts


def _abs_sum(w_out: torch.Tensor) -> torch.Tensor:
    """sum_k |w_out| per unit (``[runs, outputs, units, positions]`` -> ``[runs,
    units]``).
    On a GPU one reduction kernel without a temporary |w|; on a CPU abs-then-sum is
    faster."""
    if w_out.is_cuda:
        return torch.linalg.vector_norm(w_out, ord=1, dim=(1, 3))
    return w_out.abs().sum(dim=(1, 3))
