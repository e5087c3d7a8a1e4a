"""Checkers for the book's coding exercises.

Each exercise asks the reader to write one small function; its checker runs that
function on inputs whose answers are known (computed here with the package's own
code) and says plainly what is wrong, or that it is right.

>>> import torch
>>> check_dead_units(lambda h: int((h == 0).all(dim=0).sum()))
Correct: your dead_units agrees with lopbook.metrics.dead_units on 4 test matrices.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import dead_units, effective_rank

__all__ = [
    "check_online_accuracy",
    "check_effective_rank",
    "check_dead_units",
    "check_contribution_utility",
    "check_shrink_and_perturb_step",
    "check_ltu_target",
    "check_linear_baseline_accuracy",
    "check_weight_clipping",
]


class ExerciseError(AssertionError):
    """The function written for an exercise gives a wrong answer."""


def _done(message: str) -> None:
    print(f"Correct: {message}")


def _matrices(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    low_rank = torch.rand(50, 3, generator=g) @ torch.rand(3, 20, generator=g)
    relu = torch.relu(torch.randn(40, 12, generator=g))
    relu[:, [2, 7]] = 0.0  # two dead units
    return [torch.eye(6), low_rank, relu, torch.randn(30, 30, generator=g)]


def check_effective_rank(fn) -> None:
    """``fn(H) -> float``: the effective rank of a matrix ``H`` (rows: examples)."""
    for H in _matrices():
        expected = effective_rank(H)
        got = float(fn(H.clone()))
        if not np.isclose(got, expected, rtol=1e-4):
            raise ExerciseError(
                f"for a {tuple(H.shape)} matrix your effective rank is {got:.4f}, the "
                f"right value is {expected:.4f}. Hint: normalise the singular values "
                "to sum to one, then take exp of their entropy."
            )
    _done(
        "your effective rank agrees with lopbook.metrics.effective_rank on 4 test "
        "matrices (the identity gives 6, a rank-3 product gives at most 3)."
    )


def check_dead_units(fn) -> None:
    """``fn(h) -> int``: the number of dead units in activations ``h``
    ``[examples, units]`` (zero on every example)."""
    for h in _matrices():
        h = torch.relu(h)
        expected = dead_units(h)
        got = int(fn(h.clone()))
        if got != expected:
            raise ExerciseError(
                f"for activations of shape {tuple(h.shape)} your count is {got}, the "
                f"right count is {expected}. A unit is dead when its column is zero on "
                "every example (every row)."
            )
    _done("your dead_units agrees with lopbook.metrics.dead_units on 4 matrices.")


def check_contribution_utility(fn) -> None:
    """``fn(u, h, w_out, eta) -> u_new``: one update of the contribution utility of
    one layer: ``u`` ``[units]``, activations ``h`` ``[units]`` of one example, the next
    layer's weights ``w_out`` ``[outputs, units]``, decay ``eta``."""
    g = torch.Generator().manual_seed(1)
    for eta in (0.99, 0.5):
        u = torch.rand(8, generator=g)
        h = torch.relu(torch.randn(8, generator=g))
        w_out = torch.randn(5, 8, generator=g)
        expected = eta * u + (1 - eta) * h.abs() * w_out.abs().sum(dim=0)
        got = torch.as_tensor(fn(u.clone(), h.clone(), w_out.clone(), eta))
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-6):
            raise ExerciseError(
                f"with eta = {eta} your utilities are {got.tolist()}, the right ones "
                f"{expected.tolist()}. The contribution of unit i is |h_i| times the "
                "sum of |w| over the weights leaving it (a column of w_out)."
            )
    _done(
        "your update is u <- eta u + (1 - eta) |h| sum_k |w_out[k]|, as in eq. (1) "
        "of the paper."
    )


def check_shrink_and_perturb_step(fn) -> None:
    """``fn(w, grad, step_size, weight_decay, noise) -> w_new``: one Shrink-and-Perturb
    step, given the noise to add (already scaled by sigma)."""
    g = torch.Generator().manual_seed(2)
    w, grad = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    noise = 1e-2 * torch.randn(6, 4, generator=g)
    alpha, lam = 0.1, 0.01
    expected = w - alpha * (grad + lam * w) + noise
    got = torch.as_tensor(fn(w.clone(), grad.clone(), alpha, lam, noise.clone()))
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-6):
        shrink_only = w - alpha * (grad + lam * w)
        hint = (
            "you forgot the noise"
            if torch.allclose(got, shrink_only, atol=1e-6)
            else "the shrink is the L2 term: w <- w - alpha (grad + lambda w)"
        )
        raise ExerciseError(f"your step gives a different w ({hint}).")
    _done("w <- (1 - alpha lambda) w - alpha grad + noise: L2 plus a perturbation.")


def check_ltu_target(fn) -> None:
    """``fn(x, W, beta) -> f``: the outputs (0 or 1) of linear threshold units with
    weights ``W`` ``[units, inputs]`` (entries +-1) on binary inputs ``x``
    ``[examples, inputs]``, with thresholds ``beta * inputs - S_i`` (``S_i``: the number
    of -1 weights of unit i), firing when ``W x`` is above the threshold."""
    g = torch.Generator().manual_seed(3)
    W = torch.randint(0, 2, (7, 9), generator=g).float() * 2 - 1
    x = torch.randint(0, 2, (20, 9), generator=g).float()
    beta = 0.7
    thresholds = beta * W.shape[1] - (W < 0).sum(dim=1)
    expected = (x @ W.T > thresholds).float()
    got = torch.as_tensor(fn(x.clone(), W.clone(), beta)).float()
    if got.shape != expected.shape or not torch.equal(got, expected):
        raise ExerciseError(
            f"{int((got != expected).sum()) if got.shape == expected.shape else 'all'} "
            "of your outputs differ. Each unit fires (1) when W_i . x exceeds "
            "beta * n_inputs - (number of -1 weights of unit i), else 0."
        )
    _done("your threshold units compute the paper's target network.")


def check_linear_baseline_accuracy(fn) -> None:
    """``fn(x_train, y_train, x_test, y_test) -> float``: the test accuracy of a linear
    classifier fitted on the training images (flattened), for two-class data."""
    g = torch.Generator().manual_seed(4)
    centre = torch.randn(1, 48, generator=g)
    x0 = torch.randn(60, 48, generator=g) + centre
    x1 = torch.randn(60, 48, generator=g) - centre
    x = torch.cat([x0, x1])
    y = torch.cat([torch.zeros(60), torch.ones(60)]).long()
    order = torch.randperm(120, generator=g)
    x, y = x[order], y[order]
    got = float(fn(x[:80], y[:80], x[80:], y[80:]))
    if not 0.9 <= got <= 1.0:
        raise ExerciseError(
            f"on two well-separated Gaussian clouds your classifier scores {got:.3f};"
            " "
            "a linear classifier should be above 0.9. Did you score it on the test "
            "data?"
        )
    # many dimensions, few training images: a linear classifier fits every training
    # image, but on the test images it does much worse; scoring the training images
    # gives (nearly) 1.0
    d, n = 200, 40
    shift = 0.05 * torch.randn(1, d, generator=g)
    x = torch.randn(2 * n + 200, d, generator=g)
    y = torch.arange(len(x)) % 2
    x = x + torch.where(y[:, None] == 1, shift, -shift)
    overfit = float(fn(x[: 2 * n], y[: 2 * n], x[2 * n :], y[2 * n :]))
    if overfit > 0.95:
        raise ExerciseError(
            f"with {2 * n} training images of {d} pixels your classifier scores "
            f"{overfit:.3f}: that is its accuracy on the training images, which it "
            "fits perfectly. Score it on the test images (x_test, y_test)."
        )
    _done(
        f"your linear classifier separates two Gaussian clouds ({got:.2f}) and is "
        f"scored on the test images ({overfit:.2f} where it fits every training image)."
    )


def check_weight_clipping(fn) -> None:
    """``fn(w, bound, kappa) -> w_clipped``: weight clipping of one layer's weights
    ``w``, drawn at initialisation from U(-bound, bound): every weight kept within
    ``kappa * bound`` of zero. The right answer comes from the package's
    :class:`~lopbook.methods.weight_clipping.WeightClipping`."""
    from .methods.base import Networks
    from .methods.weight_clipping import WeightClipping, WeightClippingSettings

    g = torch.Generator().manual_seed(5)
    for bound, kappa in ((0.2, 1.0), (0.2, 2.0), (0.05, 3.5)):
        w = 3 * bound * torch.randn(6, 4, generator=g)
        nets = Networks([w.clone().unsqueeze(0)], [torch.zeros(1, 6)], [], [],
                        [g], [bound], lambda i: [])
        WeightClipping(nets, [WeightClippingSettings(kappa=kappa)]).after_step([])
        expected = nets.weights[0][0]
        got = torch.as_tensor(fn(w.clone(), bound, kappa))
        if got.shape == expected.shape and torch.allclose(got, expected, atol=1e-7):
            continue
        if got.shape == w.shape and torch.allclose(got, w.clamp(-kappa, kappa)):
            hint = "the limit is kappa times the layer's initial bound, not kappa"
        elif got.shape == w.shape and torch.allclose(got, w.clamp(max=kappa * bound)):
            hint = "clip both sides: large negative weights too"
        elif got.shape == w.shape and torch.equal(got, w):
            hint = "your function returns the weights unchanged"
        else:
            hint = "each weight should become clip(w, -kappa bound, kappa bound)"
        raise ExerciseError(
            f"with bound {bound} and kappa {kappa} your weights differ from the "
            f"clipped ones ({hint})."
        )
    _done(
        "w <- clip(w, -kappa s, kappa s), as WeightClipping does after every step, "
        "on 3 test layers."
    )


def check_online_accuracy(fn) -> None:
    """``fn(learner, x, y) -> float``: let ``learner`` learn from the examples one at a
    time, in order, and return the fraction it classified correctly *before* learning
    from each. Checked against the same computation on its own copy of the network,
    on a made-up task of 300 examples with 3 classes."""
    from .learners import Backprop
    from .nets import MLP

    g = torch.Generator().manual_seed(5)
    x = torch.rand(300, 20, generator=g)
    y = (x @ torch.randn(20, 3, generator=g)).argmax(dim=1)

    def fresh():
        return Backprop(MLP(20, 16, seed=0), step_size=0.1)

    def reference(before: bool = True):
        learner, correct = fresh(), 0
        for i in range(len(x)):
            if before:
                out = learner.learn(x[i : i + 1], y[i : i + 1])[1]
            else:  # the mistake to catch: predicting after the step
                learner.learn(x[i : i + 1], y[i : i + 1])
                with torch.no_grad():
                    out = learner.net(x[i : i + 1])
            correct += int(out.argmax(dim=1).item() == y[i].item())
        return learner, correct / len(x)

    expected_learner, expected = reference()
    learner = fresh()
    got = float(fn(learner, x.clone(), y.clone()))
    same = all(
        torch.equal(a, b)
        for a, b in zip(learner.net.parameters(), expected_learner.net.parameters())
    )
    if not same:
        raise ExerciseError(
            "after your function the network's weights are not those of a network "
            "that learned from each example once, in order: call "
            "learner.learn(x[i:i + 1], y[i:i + 1]) exactly once for every i"
        )
    if abs(got - expected) > 1e-9:
        after = reference(before=False)[1]
        hint = (
            "you scored the predictions made after each step; use the outputs "
            "learn() returns, computed before it"
            if abs(got - after) < 1e-9
            else "count the examples whose predicted class (the argmax of the "
            "outputs) is the label, and divide by the number of examples"
        )
        raise ExerciseError(
            f"your online accuracy is {got:.4f}, the right value is {expected:.4f}: "
            f"{hint}."
        )
    _done(f"your online accuracy agrees with the reference ({expected:.4f}).")
