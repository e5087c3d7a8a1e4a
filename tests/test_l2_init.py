"""L2 Init (Kumar, Marklund and Van Roy, 2023): the loss plus (lambda / 2) ||theta - theta_0||^2."""
import copy

import pytest
import torch
import torch.nn.functional as F

from lopbook import methods
from lopbook.engine import Lockstep, RunSettings
from lopbook.learners import Learner
from lopbook.nets import MLP
from lopbook.runtime import make_generator

IN, OUT = 12, 3


def net(seed=0):
    return MLP(IN, 10, 2, OUT, seed=seed)


def batches(seed, n, batch=4):
    g = make_generator(seed)
    return [(torch.rand(batch, IN, generator=g), torch.randint(0, OUT, (batch,), generator=g)) for _ in range(n)]


def test_steps_are_sgd_on_the_loss_plus_the_pull_to_the_initial_parameters():
    """Three SGD steps of the learner equal three steps of autograd on
    cross-entropy + (lambda / 2) * sum ||theta - theta_0||^2 (every parameter, biases included)."""
    lam, lr = 0.3, 0.05
    mine, manual = net(1), net(1)
    theta0 = [p.detach().clone() for p in manual.parameters()]
    learner = Learner(mine, lr, method="l2_init", weight_decay=lam)
    for x, y in batches(2, 3):
        learner.learn(x, y)
        loss = F.cross_entropy(manual(x), y)
        loss = loss + lam / 2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(manual.parameters(), theta0))
        grads = torch.autograd.grad(loss, list(manual.parameters()))
        with torch.no_grad():
            for p, g in zip(manual.parameters(), grads):
                p -= lr * g
    for a, b in zip(mine.parameters(), manual.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_gradient_term_is_lambda_times_the_distance_to_the_start():
    learner = Learner(net(0), 0.1, method="l2_init", weight_decay=0.25)
    method = learner.method
    with torch.no_grad():
        for p in learner.net.parameters():
            p.add_(1.5)                      # move every parameter away from where it started
    for i, p in enumerate(method.nets.params):
        torch.testing.assert_close(method.gradient(i, p, None), torch.full_like(p, 0.25 * 1.5))


def test_without_a_loss_gradient_parameters_return_to_their_start_not_to_zero():
    """With the loss left out (only the methods' gradient terms, by hand), parameters moved away from their start
    shrink their distance to theta_0 by (1 - lr lambda) per step under L2 Init, and their distance to 0 under L2."""
    lam, lr, steps = 0.5, 0.1, 20
    nets = {name: net(3) for name in ("l2", "l2_init")}
    start = [p.detach().clone() for p in nets["l2"].parameters()]
    learners = {name: Learner(n, lr, method=name, weight_decay=lam) for name, n in nets.items()}
    for learner in learners.values():
        with torch.no_grad():
            for p in learner.net.parameters():
                p.add_(2.0)
        for _ in range(steps):          # only the gradient terms: no loss, plain SGD by hand
            with torch.no_grad():
                for i, p in enumerate(learner.net.parameters()):
                    p -= lr * learner.method.gradient(i, learner.nets.params[i], None)[0]
    shrink = (1 - lr * lam) ** steps
    for p, p0 in zip(nets["l2_init"].parameters(), start):
        torch.testing.assert_close(p - p0, torch.full_like(p, 2.0 * shrink), rtol=1e-5, atol=1e-6)
    for p, p0 in zip(nets["l2"].parameters(), start):
        torch.testing.assert_close(p, (p0 + 2.0) * shrink, rtol=1e-5, atol=1e-6)


def test_the_initial_parameters_are_each_runs_own_and_are_checkpointed():
    runs = [RunSettings(seed=s, step_size=0.05, method="l2_init",
                        hyperparameters=methods.settings("l2_init", weight_decay=0.1)) for s in (1, 2)]
    nets = [net(10), net(11)]
    engine = Lockstep(nets, runs)
    method, _ = engine.method_of(1)
    for theta0, layer in zip(method.initial[::2], nets[1].weight_layers()[:-1]):
        assert torch.equal(theta0[1], layer.weight.detach())
    for x, y in batches(4, 30):
        engine.learn(x.expand(2, -1, -1).clone(), y.expand(2, -1).clone())
    saved = engine.run_state(1)
    other = Lockstep([net(20), net(21)], runs)        # other starting weights: theta_0 comes from the state
    other.load_run_state(1, copy.deepcopy(saved))
    theirs, _ = other.method_of(1)
    for a, b in zip(theirs.initial, method.initial):
        assert torch.equal(a[1], b[1])


def test_weight_decay_must_be_positive():
    with pytest.raises(ValueError, match="weight_decay"):
        methods.settings("l2_init", weight_decay=0.0)
