"""UPGD (Elsayed and Mahmood, 2024): utility-based perturbed gradient descent.

Every weight ``w`` (every parameter, biases, layer norm and the output layer included)
keeps a running average of its first-order utility, the change of the loss ``L`` that
removing it (setting it to zero) would cause, to first order:

    u <- beta_u u + (1 - beta_u) (-dL/dw * w).

Its utility is then scaled into (0, 1) by the largest running utility of the whole
network (*global* UPGD),

    u_bar = sigmoid((u / (1 - beta_u^t)) / eta),    eta = max over the network of u,

and the weight takes a gradient step plus Gaussian noise, both gated by ``1 - u_bar``
(useful weights move little: protection; useless ones are perturbed: plasticity), with
decoupled weight decay:

    w <- (1 - alpha lambda) w - alpha (dL/dw + xi) (1 - u_bar),   xi ~ N(0, sigma^2).

Here this is a gradient hook (:meth:`UPGD.gradient`) that replaces the gradient by the
UPGD direction: with plain SGD of step size ``alpha`` the update ``w <- w - alpha
grad`` is then exactly the rule above. UPGD
*is* an optimiser: it is meant for plain SGD, without momentum. With momentum or Adam
the gated, perturbed gradient would be fed to that optimiser (Adam's normalisation
largely undoes the gate and rescales the noise), which is not the paper's method, so
:meth:`UPGD.supports` refuses them.

Details from the authors' code (github.com/mohmdelsayed/upgd,
``core/optim/weight_upgd/first_order.py``, ``FirstOrderGlobalUPGD``, the method of the
paper's Permuted MNIST figures): ``eta`` is the maximum of the running utilities
*without* the bias correction that the numerator gets; the noise is drawn afresh for
every weight at every step. The repository's README shows a variant that steps by
``2 alpha``; the experiments use ``alpha``, as here.

One difference: the hook sees one parameter's gradient at a time, so the maximum
``eta`` of step ``t`` cannot include the utilities of step ``t`` itself; we use the
maximum after step ``t - 1``. The running utilities, and so their maximum, change
little from one step to the next (by a fraction of order ``1 / t`` early on, of order
``1 - beta_u`` later). At the very first step, where there is no maximum yet (and
whenever it is not positive), every weight gets ``u_bar = sigmoid(0) = 1/2``.

Reference: M. Elsayed, A. R. Mahmood, "Addressing Loss of Plasticity and Catastrophic
Forgetting in Continual Learning", ICLR 2024; arXiv:2404.00781.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import Hyperparameters, Method, require

__all__ = ["UPGD"]


@dataclasses.dataclass(frozen=True)
class UPGDSettings(Hyperparameters):
    beta_utility: float = 0.9999
    """beta_u: decay of the running average of each weight's utility (the authors'
    input-permuted MNIST choice; their grid: 0.999, 0.9999)."""
    noise_std: float = 0.1
    """sigma: standard deviation of the Gaussian perturbation xi (their choice; grid
    0.01, 0.1, 1)."""
    weight_decay: float = 0.01
    """lambda: decoupled weight decay, w <- (1 - alpha lambda) w (their choice; grid
    0, 1e-4 ... 0.1). Their step size for these values was alpha = 0.01."""

    PER_RUN = ("beta_utility", "noise_std", "weight_decay")

    def check(self) -> None:
        require(
            0 <= self.beta_utility < 1,
            f"beta_utility must be in [0, 1), got {self.beta_utility}",
        )
        require(self.noise_std >= 0, f"noise_std must be >= 0, got {self.noise_std}")
        require(
            self.weight_decay >= 0,
            f"weight_decay must be >= 0, got {self.weight_decay}",
        )


class UPGD(Method):
    """First-order, global UPGD: gradient and noise gated by each weight's utility."""

    #: its cost per step, roughly, in backprop steps (CPU, width 100)
    step_cost = 8.0

    name = "upgd"
    label = "UPGD"
    Settings = UPGDSettings
    needs_gradients = True

    @classmethod
    def supports(cls, net, optimizer: str = "sgd", momentum: float = 0.0) -> str | None:
        if optimizer != "sgd" or momentum:
            return "UPGD is its own optimiser: use plain SGD (no momentum, no Adam)"
        return None

    def __init__(self, nets, settings):
        super().__init__(nets, settings)
        R, params = nets.runs, nets.params
        like = dict(device=nets.device, dtype=params[0].dtype)
        sizes = [p[0].numel() for p in params]
        # the running utilities u of all of a run's weights, in one flat buffer
        self.utility = torch.zeros(R, sum(sizes), **like)
        self.noise = torch.zeros(R, sum(sizes), **like)  # sigma xi, drawn each step
        self.utilities = _views(self.utility, sizes, params)
        self.noises = _views(self.noise, sizes, params)
        flat = torch.zeros(R, 1, **like)
        self.beta_run = self.column("beta_utility", flat)  # [runs, 1]
        self.sigma_run = self.column("noise_std", flat)
        self.beta = [self.column("beta_utility", p) for p in params]
        self.minus_one_minus_beta = [b - 1 for b in self.beta]  # -(1 - beta_u)
        self.decay = [self.column("weight_decay", p) for p in params]
        self.inverse_eta = torch.zeros(R, 1, **like)  # 1 / eta, per run
        # -1 / (eta (1 - beta_u^t)) of this step, per run: u times it is -x of u_bar
        self.scale = torch.zeros(R, 1, **like)
        self.state = {"utility": self.utility}

    def gradient(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        """Replaces ``grad`` in place by the UPGD direction, so that plain SGD's
        ``w <- w - alpha grad`` is the rule above (fewer passes over the weights than
        returning a term to add)."""
        if i == 0:  # the first parameter of a step: new noise, the last step's eta
            self.start_step()
        u = self.utilities[i]
        u.mul_(self.beta[i]).addcmul_(grad * p, self.minus_one_minus_beta[i])  # -g w
        # 1 - u_bar = 1 - sigmoid(x) = sigmoid(-x), x = u / (1 - beta_u^t) / eta
        gate = torch.sigmoid_(u * self.scale.view(-1, *[1] * (p.dim() - 1)))
        # (g + sigma xi)(1 - u_bar) + lambda w
        grad.add_(self.noises[i]).mul_(gate).addcmul_(p, self.decay[i])
        return None

    def start_step(self) -> None:
        """Draw this step's noise from each run's generator, and take 1 / eta from the
        running utilities as the last step left them (0 where none is positive)."""
        for r, generator in enumerate(self.nets.generators):
            self.noise[r].normal_(generator=generator)
        self.noise.mul_(self.sigma_run)
        eta = self.utility.amax(dim=1, keepdim=True)
        self.inverse_eta = torch.where(eta > 0, 1 / eta, torch.zeros_like(eta))
        t = self.nets.step + 1  # this step's number (the count is raised after it)
        torch.div(self.inverse_eta, self.beta_run.pow(t) - 1, out=self.scale)


def _views(flat: torch.Tensor, sizes: list[int], params) -> list[torch.Tensor]:
    """Views of a flat ``[runs, all parameters]`` buffer shaped like each parameter."""
    return [part.view(p.shape) for part, p in zip(flat.split(sizes, dim=1), params)]
