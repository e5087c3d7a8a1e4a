"""What every learning method is built on: the networks it acts on, and its hooks.

A method (continual backprop, Shrink-and-Perturb, ...) is written once, on
tensors with a leading *run* axis: ``weights[l]`` is ``[runs, out, in]``
(``[runs, out, in, kh, kw]`` for a convolution), ``biases[l]`` is
``[runs, out]`` and the hidden activations are ``[runs, batch, units, ...]``.
The same code then serves one network (``runs == 1``, the reference learner
of :mod:`lopbook.learners`) and R networks trained in lockstep
(:mod:`lopbook.engine`).

A method changes plain backprop in two places, both optional:

* :meth:`Method.gradient`: a term added to the gradient of a parameter (the
  gradient of an extra loss, such as L2's penalty);
* :meth:`Method.after_step`: anything done after the gradient step (noise,
  replacing units).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch

__all__ = ["Hyperparameters", "Networks", "Method", "require"]


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """Base class of a method's hyperparameters (a frozen dataclass).

    Subclasses give every field the paper's default and a docstring, and check
    its value in :meth:`check`. Fields listed in ``PER_RUN`` may differ between
    runs trained together in lockstep; the others must be equal.
    """

    PER_RUN: ClassVar[tuple[str, ...]] = ()

    def check(self) -> None:
        """Raise ``ValueError`` for an impossible value (nothing to check here)."""

    def shared(self) -> tuple:
        """The values that runs trained as one instance of the method must share."""
        return tuple(
            (f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in self.PER_RUN
        )


class Networks:
    """R networks of one architecture, seen through tensors with a leading run axis.

    Attributes
    ----------
    weights, biases : weight layer ``l``'s parameters, ``[runs, out, ...]`` and
        ``[runs, out]``; hidden layer ``l`` is the output of ``weights[l]`` and
        feeds ``weights[l + 1]``.
    gains, shifts : the normalisation layers' per-unit parameters, ``[runs, units]``
        per hidden layer (empty lists without normalisation).
    running_means, running_vars : batch norm's running statistics (or empty lists).
    params : every parameter tensor, in the networks' parameter order.
    generators : one random generator per run (dropout masks, noise, new units).
    init_bounds : half-width of the uniform distribution each weight layer was
        initialised from (new units are drawn from it again).
    step : number of gradient steps taken so far.
    """

    def __init__(
        self,
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
        gains: list[torch.Tensor],
        shifts: list[torch.Tensor],
        generators: Sequence[torch.Generator],
        init_bounds: list[float],
        buffers: Callable[[int], list[torch.Tensor]],
        clock: list[int] | None = None,
        running: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], []),
    ):
        self.weights, self.biases = weights, biases
        self.gains, self.shifts = gains, shifts
        self.running_means, self.running_vars = (
            running  # batch norm (reference learners)
        )
        self.generators = list(generators)
        self.init_bounds = (
            init_bounds  # half-width of each layer's uniform initial weights
        )
        self._buffers = buffers
        hidden = [p for pair in zip(weights[:-1], biases[:-1]) for p in pair]
        norms = [p for pair in zip(gains, shifts) for p in pair]
        self.params = hidden + norms + [weights[-1], biases[-1]]
        self._clock = clock if clock is not None else [0]  # shared with every view
        self.hidden_sizes = [w.shape[1] for w in weights[:-1]]  # units per hidden layer
        self.nonnegative = True  # hidden activations are >= 0 (ReLU)

    @property
    def step(self) -> int:
        """Number of gradient steps taken so far (counting the current one in hooks)."""
        return self._clock[0]

    @step.setter
    def step(self, value: int) -> None:
        self._clock[0] = int(value)

    @property
    def runs(self) -> int:
        return self.weights[0].shape[0]

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def index(self, tensor: torch.Tensor) -> int:
        """Position of ``tensor`` in :attr:`params`."""
        return next(i for i, p in enumerate(self.params) if p is tensor)

    def optimizer_buffers(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """The optimiser's state tensors of parameter ``tensor`` (momentum, Adam's
        moments), each shaped like it; empty for plain SGD."""
        return self._buffers(self.index(tensor))

    def fresh_weights(self, l: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Incoming weights for ``n`` new units of layer ``l``, drawn as at
        initialisation."""
        w = self.weights[l]
        bound = self.init_bounds[l]
        fresh = torch.empty((n, *w.shape[2:]), device=w.device, dtype=w.dtype)
        return fresh.uniform_(-bound, bound, generator=generator)

    @staticmethod
    def outgoing(weight: torch.Tensor, units: int) -> torch.Tensor:
        """The next layer's weights as ``[runs, outputs, units, positions]``: a conv
        unit (channel) feeds several weights of every output."""
        return weight.view(weight.shape[0], weight.shape[1], units, -1)

    def reinitialise_units(
        self, l: int, runs: np.ndarray, counts: np.ndarray, units: torch.Tensor
    ) -> torch.Tensor:
        """Make ``counts[i]`` units of hidden layer ``l`` of run ``runs[i]`` new
        (``units``: their indices, run after run): fresh incoming weights drawn as at
        initialisation, zero bias, zero outgoing weights (the network's output does not
        change), reset normalisation, and no optimiser state (momentum, Adam's moments)
        in any of those weights. Returns the run of each unit."""
        n = self.hidden_sizes[l]
        run = torch.as_tensor(np.repeat(runs, counts), device=self.device)
        fresh = [
            self.fresh_weights(l, c, self.generators[r]) for r, c in zip(runs, counts)
        ]
        self.weights[l][run, units] = torch.cat(fresh)
        self.biases[l][run, units] = 0.0
        self.outgoing(self.weights[l + 1], n)[run, :, units] = 0.0
        rows = [self.weights[l], self.biases[l]]
        if self.gains:  # normalisation of the new units
            self.gains[l][run, units] = 1.0
            self.shifts[l][run, units] = 0.0
            rows += [self.gains[l], self.shifts[l]]
        if self.running_means:  # batch norm's running statistics
            self.running_means[l][run, units] = 0.0
            self.running_vars[l][run, units] = 1.0
        for p in rows:
            for buffer in self.optimizer_buffers(p):
                buffer[run, units] = 0.0
        for buffer in self.optimizer_buffers(self.weights[l + 1]):
            self.outgoing(buffer, n)[run, :, units] = 0.0
        return run

    def select(self, start: int, stop: int) -> "Networks":
        """Runs ``start`` to ``stop - 1`` as networks of their own (views: changes show
        here)."""
        part = slice(start, stop)
        view = Networks(
            [w[part] for w in self.weights],
            [b[part] for b in self.biases],
            [g[part] for g in self.gains],
            [s[part] for s in self.shifts],
            self.generators[part],
            self.init_bounds,
            lambda i: [b[part] for b in self._buffers(i)],
            self._clock,
            (
                [m[part] for m in self.running_means],
                [v[part] for v in self.running_vars],
            ),
        )
        view.nonnegative = self.nonnegative
        return view


class Method:
    """Base class of a learning method: plain backprop (it changes nothing).

    A subclass is constructed once for a group of runs, with their
    :class:`Networks` and one :class:`Hyperparameters` per run, and keeps any
    per-run state in :attr:`state` (tensors or arrays with a leading run axis,
    or lists of them), so that checkpoints can save and restore each run.
    """

    #: registry name and plot label (set by :func:`lopbook.methods.register`)
    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    #: the hyperparameter dataclass
    Settings: ClassVar[type[Hyperparameters]] = Hyperparameters
    #: whether :meth:`gradient` needs the gradient of the loss itself (no fused update)
    needs_gradients: ClassVar[bool] = False
    #: about what the method costs per step, in plain backprop steps (only for
    #: sharing work among the CPU's cores; see :func:`lopbook.runner.split_jobs`)
    step_cost: ClassVar[float] = 1.0

    def __init__(self, nets: Networks, settings: Sequence[Hyperparameters]):
        self.nets = nets
        self.settings = list(settings)
        self.hp = self.settings[0]
        self.state: dict[str, object] = {}

    def per_run(self, name: str) -> np.ndarray:
        """Hyperparameter ``name`` of every run, as a float64 array ``[runs]``."""
        return np.array([getattr(s, name) for s in self.settings], dtype=np.float64)

    def column(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Hyperparameter ``name`` of every run shaped to broadcast over ``like``
        (``[runs, 1, ...]``)."""
        values = torch.tensor(self.per_run(name), dtype=like.dtype, device=like.device)
        return values.view(-1, *[1] * (like.dim() - 1))

    @classmethod
    def supports(cls, net, optimizer: str = "sgd", momentum: float = 0.0) -> str | None:
        """Why this method cannot train ``net`` with ``optimizer`` (and SGD's
        ``momentum``), or None when it can."""
        return None

    # ---------------------------------------------------------------- the hooks
    def gradient(
        self, i: int, p: torch.Tensor, grad: torch.Tensor | None
    ) -> torch.Tensor | None:
        """A term to add to the loss's gradient ``grad`` of parameter ``params[i]``
        (``p``), or None. ``grad`` is None where the engine fuses the SGD update into
        its backward pass; a method that needs it sets ``needs_gradients``, and may
        then also change ``grad`` in place (and return None) where that is cheaper
        than a term to add."""
        return None

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        """Called after every gradient step with the step's hidden activations."""

    # ---------------------------------------------------------------- checkpoints
    def run_state(self, r: int) -> dict:
        """The state of run ``r`` (copies, on the CPU)."""
        return {k: _take(v, r) for k, v in self.state.items()}

    def load_run_state(self, r: int, saved: dict) -> None:
        """Restore run ``r`` from :meth:`run_state`."""
        if saved.keys() != self.state.keys():
            raise ValueError(
                f"checkpoint of {self.name} has state {sorted(saved)}, "
                f"expected {sorted(self.state)}"
            )
        for k, v in self.state.items():
            _put(v, r, saved[k])


def _take(value, r):
    """Run ``r``'s part of a state entry, as a CPU tensor (checkpoints hold tensors
    only)."""
    if isinstance(value, list):
        return [_take(v, r) for v in value]
    if isinstance(value, torch.Tensor):
        return value[r].detach().clone().cpu()
    return torch.from_numpy(np.array(value[r], copy=True))


def _put(value, r, saved):
    if isinstance(value, list):
        for v, s in zip(value, saved, strict=True):
            _put(v, r, s)
    elif isinstance(value, torch.Tensor):
        value[r].copy_(torch.as_tensor(saved))
    else:
        value[r] = np.asarray(saved)
