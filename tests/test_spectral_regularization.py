"""Spectral regularisation (Lewandowski et al. 2025): the loss plus
lambda * sum_l [(sigma_max(W_l)^k - 1)^2 + ||b_l||^(2k)], sigma_max by one warm-started power-iteration step per update,
its gradient 2k (sigma^k - 1) sigma^(k-1) u v^T."""
import copy
import io

import pytest
import torch

from lopbook import methods
from lopbook.engine import Lockstep, RunSettings
from lopbook.learners import Learner
from lopbook.nets import MLP
from lopbook.runtime import make_generator

IN, OUT, WIDTH = 12, 3, 10


def net(seed=0, norm=None):
    return MLP(IN, WIDTH, 2, OUT, norm=norm, seed=seed)


def converge(method, l, steps=300):
    for _ in range(steps):
        sigma = method.power_iteration(l)
    return sigma


def test_power_iteration_converges_to_the_spectral_norm():
    learner = Learner(net(1), 0.01, method="spectral_regularization")
    method, nets = learner.method, learner.nets
    for l, w in enumerate(nets.weights):
        exact = torch.linalg.matrix_norm(w[0], ord=2)
        first = method.power_iteration(l)
        assert float(first[0]) <= float(exact) * (1 + 1e-6)          # an estimate from below
        assert float(converge(method, l)[0]) == pytest.approx(float(exact), rel=1e-5)
        u, v = method.u[l][0], method.v[l][0]
        torch.testing.assert_close(w[0] @ v, exact * u, rtol=1e-4, atol=1e-5)   # the top singular pair


@pytest.mark.parametrize("k", [1, 2, 3])
def test_the_gradient_terms_are_autograds_gradients_of_the_penalty(k):
    lam = 0.3
    learner = Learner(net(2, norm="layer"), 0.01, method="spectral_regularization", strength=lam, exponent=k)
    method, nets = learner.method, learner.nets
    with torch.no_grad():
        for p in nets.biases + nets.shifts:
            p.normal_(generator=make_generator(3))
        nets.gains[0].mul_(1.5)
        nets.gains[0][0, 4] = -2.5                         # the largest |gain|, negative
    for l in range(len(nets.weights)):
        converge(method, l)
    for i, p in enumerate(nets.params):
        q = p[0].detach().clone().requires_grad_(True)
        kind, _ = method.role[i]
        if kind == "weight":
            penalty = (torch.linalg.matrix_norm(q, ord=2) ** k - 1) ** 2
        elif kind == "gain":
            penalty = (q.abs().max() ** k - 1) ** 2
        else:
            penalty = q.norm() ** (2 * k)
        (expected,) = torch.autograd.grad(lam * penalty, q)
        torch.testing.assert_close(method.gradient(i, p, None)[0], expected, rtol=1e-4, atol=1e-6)


def test_the_initial_target_leaves_the_initial_network_alone():
    learner = Learner(net(4), 0.01, method="spectral_regularization", target="initial")
    method, nets = learner.method, learner.nets
    for l, w in enumerate(nets.weights):
        assert float(method.targets[0, l]) == pytest.approx(float(torch.linalg.matrix_norm(w[0], ord=2)))
        converge(method, l)
        i = nets.index(w)
        assert float(method.gradient(i, w, None).abs().max()) < 1e-5


def test_the_penalty_alone_pulls_each_spectral_norm_to_one():
    """Only the gradient terms, plain SGD by hand: the Kaiming-initialised layers (spectral norms above 2) shrink to
    1 (one singular value after the other: the power iteration follows the largest), the biases stay at zero."""
    lr, lam = 0.05, 0.2
    learner = Learner(net(5), lr, method="spectral_regularization", strength=lam)
    method, nets = learner.method, learner.nets
    start = [float(torch.linalg.matrix_norm(w[0], ord=2)) for w in nets.weights[:-1]]
    assert min(start) > 2
    for _ in range(600):
        with torch.no_grad():
            for i, p in enumerate(nets.params):
                p -= lr * method.gradient(i, p, None)
    for w in nets.weights:
        assert float(torch.linalg.matrix_norm(w[0], ord=2)) == pytest.approx(1.0, abs=0.01)
    for b in nets.biases:
        assert float(b.abs().max()) == 0.0                 # zero at the start, and no pull away from zero


def test_the_singular_vectors_are_each_runs_own_and_checkpointed():
    runs = [RunSettings(seed=s, step_size=0.05, method="spectral_regularization",
                        hyperparameters=methods.settings("spectral_regularization", strength=lam))
            for s, lam in ((1, 1e-2), (2, 1e-3))]
    g = make_generator(6)
    data = [(torch.rand(2, 1, IN, generator=g), torch.randint(0, OUT, (2, 1), generator=g)) for _ in range(30)]
    engine = Lockstep([net(1), net(2)], runs)
    for x, y in data[:15]:
        engine.learn(x, y)
    method, _ = engine.method_of(1)
    exact = torch.linalg.matrix_norm(engine.weights[0][1], ord=2)
    assert float((engine.weights[0][1] @ method.v[0][1]).norm()) == pytest.approx(float(exact), rel=1e-2)
    buffer = io.BytesIO()
    torch.save([engine.run_state(r) for r in range(2)], buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    other = Lockstep([net(10), net(11)], runs)
    for r in range(2):
        other.load_run_state(r, copy.deepcopy(saved[r]))
    for x, y in data[15:]:
        assert torch.equal(engine.learn(x, y), other.learn(x, y))
    assert all(torch.equal(a, b) for a, b in zip(engine.params, other.params))
    for a, b in zip(method.u + method.v, other.method_of(1)[0].u + other.method_of(1)[0].v):
        assert torch.equal(a, b)


@pytest.mark.parametrize("values,match", [(dict(strength=0.0), "strength"), (dict(exponent=0), "exponent"),
                                          (dict(exponent=1.5), "exponent"), (dict(target="two"), "target")])
def test_bad_hyperparameters_are_refused(values, match):
    with pytest.raises(ValueError, match=match):
        methods.settings("spectral_regularization", **values)
