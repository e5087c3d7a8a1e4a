"""Self-Normalized Resets, SNR (Farias and Jozefiak, 2025): reset a unit when it has
been silent for longer than its own record says it should be.

A hidden unit *fires* on a step when its activation is positive for some example of
the batch. Each unit keeps its *age* ``a``, the number of examples since it last
fired, and the distribution of the waits it had between two firings. After every step,
a unit whose age reaches its threshold ``tau`` is reset: fresh incoming weights drawn
as at initialisation, zero bias and outgoing weights, no optimiser state
(:meth:`~lopbook.methods.base.Networks.reinitialise_units`). Every ``update_period``
steps each unit's threshold moves to the ``percentile`` of its waits since the last
update (the rejection level of a test of "this unit still fires as it used to"):

    q = percentile of the unit's waits;   tau <- q if q < tau else expansion * tau,

clipped to ``[min_threshold, max_threshold]``; then the record starts afresh. A unit
that fires rarely but regularly thus gets a long threshold, one that used to fire all
the time a short one: the threshold is normalised by the unit's own firing rate.

This follows the authors' code (github.com/ajozefiak/SelfNormalizedResets,
``src/algorithms/snr.py``), which the paper's Algorithm 1 describes only abstractly:
ages count examples; a wait is recorded when the unit fires and when it is reset; waits
of length 0 (firing on consecutive steps) are left out of the percentile; the initial
threshold is a given number; thresholds are updated at task boundaries, every 16
tasks. Our differences:

* The authors keep, per unit, a histogram with one bin per possible wait, up to
  ``max_threshold``: 2000 units x 60,000 bins per layer and run is far too much here.
  We keep bins of logarithmic width, ``BINS_PER_OCTAVE`` per doubling of the wait (55
  bins for waits up to 10,000), and take as threshold the longest wait of the bin where
  the percentile falls: at most 19% (2^(1/4)) above the exact percentile, never below
  it, so resets are never earlier than the exact rule would make them.
* Methods here do not see task boundaries, so thresholds are updated every
  ``update_period`` steps.
* The authors' floor of 100 (their batch size) is the hyperparameter ``min_threshold``.

Reference: V. F. Farias, A. D. Jozefiak, "Self-Normalized Resets for Plasticity in
Continual Learning", ICLR 2025; arXiv:2410.20098.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .base import Hyperparameters, Method, require

__all__ = ["SelfNormalizedResets", "BINS_PER_OCTAVE"]

#: resolution of the record of waits: bins per doubling of the wait
BINS_PER_OCTAVE = 4


def _integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class SelfNormalizedResetsSettings(Hyperparameters):
    percentile: float = 0.99
    """the rejection percentile, SNR's one hyperparameter: a unit is reset once it has
    waited longer than this fraction of its recorded waits (0.99, the authors' code
    default)."""
    initial_threshold: int = 10_000
    """tau at the start, in examples (an argument of the authors' experiments; we start
    at ``max_threshold``, so that no unit is reset before its first update)."""
    max_threshold: int = 10_000
    """the longest threshold, in examples (the authors' histogram length, an argument of
    their experiments)."""
    min_threshold: int = 100
    """the shortest threshold, in examples (100 in the authors' code)."""
    update_period: int = 10_000
    """steps between two updates of the thresholds (the authors: every 16 tasks)."""
    expansion: float = 2.0
    """factor by which tau grows when the percentile of the waits is not below it (2
    in the authors' code)."""

    PER_RUN = ("percentile",)

    def check(self) -> None:
        require(
            0 < self.percentile <= 1,
            f"percentile must be in (0, 1], got {self.percentile}",
        )
        for name in ("initial_threshold", "max_threshold", "min_threshold"):
            value = getattr(self, name)
            require(
                _integer(value) and value >= 1,
                f"{name} must be an integer >= 1, got {value}",
            )
        require(
            self.min_threshold <= self.initial_threshold <= self.max_threshold,
            "the thresholds must satisfy min_threshold <= initial_threshold <= "
            f"max_threshold, got {self.min_threshold}, {self.initial_threshold}, "
            f"{self.max_threshold}",
        )
        require(
            _integer(self.update_period) and self.update_period >= 1,
            f"update_period must be an integer >= 1, got {self.update_period}",
        )
        require(self.expansion > 1, f"expansion must be > 1, got {self.expansion}")


class SelfNormalizedResets(Method):
    """Reset units silent for longer than a percentile of their own waits."""

    #: its cost per step, roughly, in backprop steps (CPU, width 100)
    step_cost = 2.0

    name = "self_normalized_resets"
    label = "Self-Normalized Resets"
    Settings = SelfNormalizedResetsSettings

    @classmethod
    def supports(cls, net, optimizer: str = "sgd", momentum: float = 0.0) -> str | None:
        if getattr(net, "activation", "relu") == "sigmoid":
            return "SNR needs units that can be silent (a sigmoid is always positive)"
        return None

    def __init__(self, nets, settings):
        super().__init__(nets, settings)
        R, device = nets.runs, nets.device
        self.n_bins = wait_bin(self.hp.max_threshold) + 1

        def zeros(n, *more, dtype=torch.long):
            return torch.zeros(R, n, *more, dtype=dtype, device=device)

        self.ages = [zeros(n) for n in nets.hidden_sizes]
        self.thresholds = [
            zeros(n) + self.hp.initial_threshold for n in nets.hidden_sizes
        ]
        # counts of the waits, per unit and bin of logarithmic width
        self.waits = [
            zeros(n, self.n_bins, dtype=torch.int32) for n in nets.hidden_sizes
        ]
        self.resets = np.zeros((R, len(nets.hidden_sizes)), dtype=np.int64)
        self.state = dict(
            ages=self.ages,
            thresholds=self.thresholds,
            waits=self.waits,
            resets=self.resets,
        )
        # the longest wait in each bin (bin 0: no wait)
        bins = torch.arange(self.n_bins, dtype=torch.float64)
        self.longest_wait = (torch.ceil(2 ** (bins / BINS_PER_OCTAVE)) - 1).long()
        self.longest_wait = self.longest_wait.to(device)
        self.longest_wait[0] = 0
        self.percentile = torch.tensor(self.per_run("percentile"), device=device)

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        for l, h in enumerate(hidden):
            dims = [1] + list(range(3, h.dim()))  # the batch (and space) axes
            fired = h.amax(dim=dims) > 0  # [runs, units]
            age = self.ages[l]
            self.record(l, fired)  # the wait that firing ends
            age.add_(h.shape[1]).masked_fill_(fired, 0)  # ages count examples
            due = age >= self.thresholds[l]
            self.record(l, due)  # a reset ends a wait too
            age.masked_fill_(due, 0)
            self.reset(l, due)
        if self.nets.step % self.hp.update_period == 0:
            for l in range(len(hidden)):
                self.update_thresholds(l)

    def record(self, l: int, units: torch.Tensor) -> None:
        """Count the current age of each of ``units`` (a mask, ``[runs, units]``) as a
        wait of hidden layer ``l``."""
        bins = wait_bin(self.ages[l]).clamp_(max=self.n_bins - 1)
        self.waits[l].scatter_add_(2, bins.unsqueeze(2), units.unsqueeze(2).int())

    def reset(self, l: int, due: torch.Tensor) -> None:
        """Fresh incoming weights, zero bias and outgoing weights for ``due`` units."""
        run, units = torch.nonzero(due, as_tuple=True)  # run after run
        if len(units) == 0:
            return
        runs, counts = np.unique(run.cpu().numpy(), return_counts=True)
        self.nets.reinitialise_units(l, runs, counts, units)
        self.resets[runs, l] += counts

    def update_thresholds(self, l: int) -> None:
        """tau <- q if q < tau else expansion * tau, q the percentile of each unit's
        recorded waits (0 excluded), clipped; then the record starts afresh. A unit
        with no wait recorded gets q = 1, so min_threshold, as in the authors' code."""
        waits = self.waits[l][..., 1:].double().cumsum(dim=2)  # from bin 1 on
        reached = waits >= self.percentile.view(-1, 1, 1) * waits[..., -1:]
        q = self.longest_wait[reached.int().argmax(dim=2) + 1]  # first bin reaching it
        tau = self.thresholds[l]
        grown = (tau * self.hp.expansion).long()
        tau.copy_(torch.where(q < tau, q, grown))
        tau.clamp_(self.hp.min_threshold, self.hp.max_threshold)
        self.waits[l].zero_()


def wait_bin(wait):
    """The bin of a wait of ``wait`` examples: 0 for no wait, else
    ``1 + floor(BINS_PER_OCTAVE * log2(wait))`` (an int, or a tensor of them)."""
    if not isinstance(wait, torch.Tensor):
        return 0 if wait == 0 else 1 + math.floor(BINS_PER_OCTAVE * math.log2(wait))
    octaves = torch.log2(wait.clamp(min=1).double())
    return torch.where(wait > 0, 1 + (BINS_PER_OCTAVE * octaves).floor().long(), 0)
