"""Learners: one small class per algorithm of the paper, each with ``learn(x, y) -> (loss, output)``.

* :class:`Backprop` -- stochastic gradient descent (optionally with momentum) or Adam on the cross-entropy loss.
  ``weight_decay > 0`` is L2 regularisation.
* :class:`ShrinkAndPerturb` -- backprop with weight decay (shrink) plus Gaussian noise added to every weight
  and bias after every step (perturb), after Ash & Adams (2020).
* :class:`ContinualBackprop` -- backprop plus a generate-and-test step that, every step, reinitialises a small
  fraction (``replacement_rate``) of the mature hidden units with the lowest contribution ``utility``.

These are the readable reference implementations that the book shows. :mod:`lopbook.engine` trains many runs
of them at once and is tested to give the same numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nets import kaiming_bound
from .runtime import make_generator

__all__ = ["Backprop", "ShrinkAndPerturb", "ContinualBackprop", "lowest_utility", "UTILITIES"]

OPTIMIZERS = ("sgd", "adam")
UTILITIES = ("contribution", "adaptable")


class Backprop:
    """Backpropagation: one gradient step on the cross-entropy loss of each batch it is given.

    Parameters
    ----------
    net : a :class:`~lopbook.nets.MLP` or :class:`~lopbook.nets.ConvNet`.
    step_size : the learning rate.
    optimizer : ``"sgd"`` (optionally with ``momentum``) or ``"adam"`` (with ``betas``).
    weight_decay : L2 penalty coefficient (``torch.optim``'s ``weight_decay``); 0 is plain backprop.
    seed : seeds this learner's own random generator (dropout masks, noise, new units).
    """

    def __init__(self, net: nn.Module, step_size: float = 0.003, optimizer: str = "sgd", momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0, seed: int = 0):
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.net = net
        self.step_size, self.weight_decay = step_size, weight_decay
        device = next(net.parameters()).device
        self.generator = make_generator(seed, device)
        if optimizer == "sgd":
            self.optimizer = torch.optim.SGD(net.parameters(), lr=step_size, momentum=momentum,
                                             weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.Adam(net.parameters(), lr=step_size, betas=betas,
                                              weight_decay=weight_decay)

    def learn(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on the batch ``(x, y)``; returns the loss and the outputs computed *before* the update."""
        self.net.train()
        output, hidden = self.net(x, return_hidden=True, generator=self.generator)
        loss = F.cross_entropy(output, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.after_step(hidden)
        return loss.detach(), output.detach()

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        """What an algorithm does after the gradient step (nothing, for plain backprop)."""

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


class ShrinkAndPerturb(Backprop):
    """Backprop with weight decay (shrink) and Gaussian noise of std ``noise_std`` added to all parameters
    after every step (perturb)."""

    def __init__(self, net: nn.Module, step_size: float = 0.003, weight_decay: float = 1e-4,
                 noise_std: float = 1e-5, **kwargs):
        super().__init__(net, step_size, weight_decay=weight_decay, **kwargs)
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = noise_std

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        params = list(self.net.parameters())
        noise = torch.randn(sum(p.numel() for p in params), device=params[0].device, generator=self.generator)
        for p, eps in zip(params, noise.split([p.numel() for p in params])):
            p.add_(eps.view_as(p) * self.noise_std)


def lowest_utility(utility: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` eligible units of lowest utility (ties broken by unit index).

    Works on one layer (``[units]``) or on a stack of runs (``[runs, units]``, lowest ``k`` of each row).
    """
    scores = torch.where(eligible, utility, torch.full_like(utility, float("inf")))
    return torch.argsort(scores, dim=-1, stable=True)[..., :k]


def unit_mean(h: torch.Tensor) -> torch.Tensor:
    """Mean of activations ``h`` over every axis but the unit axis (1): batch, and space for a conv layer."""
    return h.mean(dim=[d for d in range(h.dim()) if d != 1])


def outgoing_view(weight: torch.Tensor, n_units: int) -> torch.Tensor:
    """The next layer's weights as ``[outputs, units, positions]`` (a conv unit feeds several positions)."""
    return weight.view(weight.shape[0], n_units, -1)


class ContinualBackprop(Backprop):
    """Continual backpropagation (Dohare et al., 2024): backprop plus selective reinitialisation.

    After each step, for every hidden layer: each unit's ``utility`` is updated as a running average (decay
    ``decay_rate``) of its contribution, ``|activation| * sum |outgoing weights|``; ``replacement_rate`` times the
    number of units older than ``maturity_threshold`` steps accumulates, and whenever the sum reaches one or
    more, that many of the mature units with the lowest (bias-corrected) utility are reinitialised: fresh
    incoming weights from the initial distribution, zero bias, zero outgoing weights (so that the new units do
    not disturb what the network has learned), age and utility reset, and their optimiser state cleared.

    ``utility="adaptable"`` uses the variant of the authors' code: ``|activation - its running mean|``
    times the mean outgoing weight magnitude, divided by the mean incoming weight magnitude.
    """

    def __init__(self, net: nn.Module, step_size: float = 0.003, replacement_rate: float = 1e-4,
                 maturity_threshold: int = 100, decay_rate: float = 0.99, utility: str = "contribution",
                 **kwargs):
        super().__init__(net, step_size, **kwargs)
        if not 0.0 <= replacement_rate <= 1.0:
            raise ValueError(f"replacement_rate must be in [0, 1], got {replacement_rate}")
        if maturity_threshold < 0:
            raise ValueError(f"maturity_threshold must be >= 0, got {maturity_threshold}")
        if not 0.0 <= decay_rate < 1.0:
            raise ValueError(f"decay_rate must be in [0, 1), got {decay_rate}")
        if utility not in UTILITIES:
            raise ValueError(f"utility must be one of {UTILITIES}, got {utility!r}")
        self.replacement_rate, self.maturity_threshold = replacement_rate, maturity_threshold
        self.decay_rate, self.utility_type = decay_rate, utility
        self.layers = net.weight_layers()
        device = self.layers[0].weight.device
        sizes = net.hidden_sizes
        self.utility = [torch.zeros(n, device=device) for n in sizes]
        self.mean_activation = [torch.zeros(n, device=device) for n in sizes]
        self.age = [torch.zeros(n, dtype=torch.long, device=device) for n in sizes]
        self.accumulated = [0.0 for _ in sizes]
        self.replacements = [0 for _ in sizes]   # total units replaced per layer, for the record

    def after_step(self, hidden: list[torch.Tensor]) -> None:
        for l, h in enumerate(hidden):
            self.age[l] += 1
            self.update_utility(l, h)
            eligible = self.age[l] > self.maturity_threshold
            self.accumulated[l] += self.replacement_rate * int(eligible.sum())
            k = int(self.accumulated[l])
            if k > 0:
                self.accumulated[l] -= k
                units = lowest_utility(self.bias_corrected_utility(l), eligible, k)
                self.reinitialise(l, units)

    def update_utility(self, l: int, h: torch.Tensor) -> None:
        """Running average of each unit's contribution to the next layer."""
        n = h.shape[1]
        outgoing = outgoing_view(self.layers[l + 1].weight, n).abs()
        if self.utility_type == "contribution":
            contribution = unit_mean(h.abs()) * outgoing.sum(dim=(0, 2))
        else:
            d = self.decay_rate
            self.mean_activation[l].mul_(d).add_(unit_mean(h), alpha=1 - d)
            mean = self.mean_activation[l] / (1 - d ** self.age[l])
            deviation = unit_mean((h - mean.view(1, n, *[1] * (h.dim() - 2))).abs())
            incoming = self.layers[l].weight.abs().view(n, -1).mean(dim=1)
            contribution = deviation * outgoing.mean(dim=(0, 2)) / incoming
        self.utility[l].mul_(self.decay_rate).add_(contribution, alpha=1 - self.decay_rate)

    def bias_corrected_utility(self, l: int) -> torch.Tensor:
        """The running average divided by ``1 - decay_rate ** age`` (it starts at zero for every new unit)."""
        return self.utility[l] / (1 - self.decay_rate ** self.age[l])

    @torch.no_grad()
    def reinitialise(self, l: int, units: torch.Tensor) -> None:
        """Replace hidden ``units`` of layer ``l`` with fresh ones whose outgoing weights are zero, so that the new
        units do not change the network's output (without normalisation layers)."""
        incoming, outgoing = self.layers[l], self.layers[l + 1]
        n = incoming.weight.shape[0]
        bound = kaiming_bound(incoming)
        fresh = torch.empty((len(units), *incoming.weight.shape[1:]), device=incoming.weight.device)
        incoming.weight[units] = fresh.uniform_(-bound, bound, generator=self.generator)   # as at initialisation
        incoming.bias[units] = 0.0
        outgoing_view(outgoing.weight, n)[:, units] = 0.0
        self.utility[l][units] = 0.0
        self.mean_activation[l][units] = 0.0
        self.age[l][units] = 0
        self.replacements[l] += len(units)
        self._reset_unit_buffers(l, units)

    def _reset_unit_buffers(self, l: int, units: torch.Tensor) -> None:
        """Zero the optimiser's state (momentum, Adam's moments) of the replaced units' weights; reset their
        normalisation parameters."""
        incoming, outgoing = self.layers[l], self.layers[l + 1]
        n = incoming.weight.shape[0]
        norm = self.net.norms[l] if self.net.norms is not None else None
        if norm is not None:
            norm.weight[units] = 1.0
            norm.bias[units] = 0.0
            if getattr(norm, "running_mean", None) is not None:
                norm.running_mean[units] = 0.0
                norm.running_var[units] = 1.0
        rows = [incoming.weight, incoming.bias] + ([norm.weight, norm.bias] if norm is not None else [])
        for p in rows + [outgoing.weight]:
            for buffer in self.optimizer.state.get(p, {}).values():
                if isinstance(buffer, torch.Tensor) and buffer.shape == p.shape:
                    if p is outgoing.weight:
                        outgoing_view(buffer, n)[:, units] = 0.0
                    else:
                        buffer[units] = 0.0

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["cbp"] = {name: [t.clone() for t in getattr(self, name)]
                        for name in ("utility", "mean_activation", "age")}
        state["cbp"].update(accumulated=list(self.accumulated), replacements=list(self.replacements))
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        cbp = state["cbp"]
        for name in ("utility", "mean_activation", "age"):
            for mine, saved in zip(getattr(self, name), cbp[name]):
                mine.copy_(saved)
        self.accumulated = list(cbp["accumulated"])
        self.replacements = list(cbp["replacements"])
