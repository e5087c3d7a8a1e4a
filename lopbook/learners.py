"""Learners: one network trained by autograd and ``torch.optim``, plus a method's hooks.

:class:`Learner` is the readable reference: each call of ``learn(x, y)`` is one
forward pass, one backward pass and one optimiser step, followed by what the
method (:mod:`lopbook.methods`) adds. The method code is the same that the
lockstep engine (:mod:`lopbook.engine`) runs for many networks at once; the
tests check that both give the same numbers.

:class:`Backprop`, :class:`ShrinkAndPerturb` and :class:`ContinualBackprop` are
the same learner with their method chosen, under the names and arguments of
earlier versions of this package.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import methods as registry
from .methods.base import Networks
from .methods.continual_backprop import UTILITIES, lowest_utility
from .runtime import make_generator

__all__ = [
    "Learner",
    "Backprop",
    "ShrinkAndPerturb",
    "ContinualBackprop",
    "lowest_utility",
    "UTILITIES",
]

OPTIMIZERS = ("sgd", "adam")
#: the losses: cross-entropy of the logits, or the squared error of a single output
LOSSES = {
    "cross_entropy": F.cross_entropy,
    "squared_error": lambda out, y: F.mse_loss(out[:, 0], y),
}


class Learner:
    """Train ``net`` with ``method`` (a name in :data:`lopbook.methods.REGISTRY`).

    Parameters
    ----------
    net : a :class:`~lopbook.nets.MLP` or :class:`~lopbook.nets.ConvNet`.
    step_size : the step size (learning rate).
    method : the learning method; its hyperparameters are the keyword arguments.
    optimizer : ``"sgd"`` (optionally with ``momentum``) or ``"adam"`` (with ``betas``).
    seed : seeds this learner's random generator (dropout masks, noise, new units).
    loss : ``"cross_entropy"`` or ``"squared_error"`` (regression, one output).
    """

    def __init__(
        self,
        net: nn.Module,
        step_size: float = 0.003,
        method: str = "backprop",
        optimizer: str = "sgd",
        momentum: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        seed: int = 0,
        loss: str = "cross_entropy",
        **hyperparameters,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
        self.loss = LOSSES[loss]
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}"
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if optimizer == "adam" and momentum:
            raise ValueError("momentum is an SGD setting; Adam uses betas")
        self.net, self.step_size = net, step_size
        device = next(net.parameters()).device
        self.generator = make_generator(seed, device)
        if optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                net.parameters(), lr=step_size, momentum=momentum
            )
        else:
            self.optimizer = torch.optim.Adam(
                net.parameters(), lr=step_size, betas=betas
            )
        self.nets = self._networks()
        self.nets.nonnegative = getattr(net, "activation", "relu") == "relu"
        cls = registry.get(method)
        reason = cls.supports(net, optimizer, momentum)
        if reason:
            raise ValueError(f"method {method!r} cannot train this network: {reason}")
        self.method = cls(self.nets, [registry.settings(method, **hyperparameters)])

    def _networks(self) -> Networks:
        """The network as the methods see it: its parameters with a run axis of size 1
        (views: the methods change the network itself)."""
        one = lambda p: p.detach().unsqueeze(0)
        layers = self.net.weight_layers()
        norms = list(self.net.norms) if self.net.norms is not None else []
        params = list(self.net.parameters())

        def buffers(i):
            state = self.optimizer.state.get(params[i], {})
            return [
                one(t)
                for t in state.values()
                if isinstance(t, torch.Tensor) and t.shape == params[i].shape
            ]

        running = [n for n in norms if getattr(n, "running_mean", None) is not None]
        return Networks(
            [one(m.weight) for m in layers],
            [one(m.bias) for m in layers],
            [one(m.weight) for m in norms],
            [one(m.bias) for m in norms],
            [self.generator],
            self.net.init_bounds()[0],
            buffers,
            running=(
                [one(n.running_mean) for n in running],
                [one(n.running_var) for n in running],
            ),
        )

    def learn(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on the batch ``(x, y)``; returns the loss and the outputs computed
        *before* the update."""
        self.net.train()
        output, hidden = self.net(x, return_hidden=True, generator=self.generator)
        loss = self.loss(output, y)
        self.optimizer.zero_grad()
        loss.backward()
        with torch.no_grad():
            for i, p in enumerate(self.net.parameters()):  # the method's gradient terms
                term = self.method.gradient(i, self.nets.params[i], p.grad.unsqueeze(0))
                if term is not None:
                    p.grad.add_(term[0])
            self.optimizer.step()
            self.nets.step += 1
            self.method.after_step([h.detach().unsqueeze(0) for h in hidden])
        return loss.detach(), output.detach()

    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.nets.step,
            "method": self.method.name,
            "method_state": self.method.run_state(0),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("method") != self.method.name:
            raise ValueError(
                f"checkpoint was made with method {state.get('method')!r}, "
                f"not {self.method.name!r}"
            )
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.nets.step = state["step"]
        self.method.load_run_state(0, state["method_state"])


class Backprop(Learner):
    """Backpropagation (SGD, optionally with momentum, or Adam); ``weight_decay > 0`` is
    L2."""

    def __init__(
        self,
        net: nn.Module,
        step_size: float = 0.003,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        seed: int = 0,
    ):
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        extra = dict(method="l2", weight_decay=weight_decay) if weight_decay else {}
        super().__init__(
            net,
            step_size,
            optimizer=optimizer,
            momentum=momentum,
            betas=betas,
            seed=seed,
            **extra,
        )
        self.weight_decay = weight_decay


class ShrinkAndPerturb(Learner):
    """Backprop with weight decay (shrink) and Gaussian noise of std ``noise_std`` added
    to all parameters after every step (perturb)."""

    def __init__(
        self,
        net: nn.Module,
        step_size: float = 0.003,
        weight_decay: float = 1e-4,
        noise_std: float = 1e-5,
        **kwargs,
    ):
        super().__init__(
            net,
            step_size,
            method="shrink_and_perturb",
            weight_decay=weight_decay,
            noise_std=noise_std,
            **kwargs,
        )
        self.weight_decay, self.noise_std = weight_decay, noise_std


class ContinualBackprop(Learner):
    """Continual backpropagation (Dohare et al., 2024): see
    :mod:`lopbook.methods.continual_backprop`."""

    def __init__(
        self,
        net: nn.Module,
        step_size: float = 0.003,
        replacement_rate: float = 1e-4,
        maturity_threshold: int = 100,
        decay_rate: float = 0.99,
        utility: str = "contribution",
        weight_decay: float = 0.0,
        **kwargs,
    ):
        if weight_decay:
            raise ValueError(
                "ContinualBackprop has no weight_decay; combine methods in a "
                "method of their own"
            )
        super().__init__(
            net,
            step_size,
            method="continual_backprop",
            replacement_rate=replacement_rate,
            maturity_threshold=maturity_threshold,
            decay_rate=decay_rate,
            utility=utility,
            **kwargs,
        )

    # the method's state, as attributes of the learner (one network: run 0)
    @property
    def replacement_rate(self) -> float:
        return self.method.hp.replacement_rate

    @property
    def maturity_threshold(self) -> int:
        return self.method.hp.maturity_threshold

    @property
    def decay_rate(self) -> float:
        return self.method.hp.decay_rate

    @property
    def utility_type(self) -> str:
        return self.method.hp.utility

    @property
    def replacements(self) -> list[int]:
        """Units replaced so far in each hidden layer."""
        return [int(n) for n in self.method.replacements[0]]

    @property
    def age(self) -> list[torch.Tensor]:
        """Age of every unit, per hidden layer."""
        return [self.method.age(l)[0] for l in range(len(self.nets.hidden_sizes))]

    @property
    def utility(self) -> list[torch.Tensor]:
        return [u[0] for u in self.method.utility]

    @property
    def mean_activation(self) -> list[torch.Tensor]:
        return [a[0] for a in self.method.mean_activation]

    def bias_corrected_utility(self, l: int) -> torch.Tensor:
        return self.method.bias_corrected_utility(l)[0]

    @torch.no_grad()
    def reinitialise(self, l: int, units: torch.Tensor) -> None:
        """Replace hidden ``units`` of layer ``l`` with fresh ones (zero outgoing
        weights)."""
        units = torch.as_tensor(units, device=self.nets.device)
        self.method.replace(l, np.array([0]), np.array([len(units)]), units)
