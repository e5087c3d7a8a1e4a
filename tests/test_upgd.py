"""UPGD (Elsayed and Mahmood 2024), first-order and global: u <- beta u + (1 - beta)(-g w),
u_bar = sigmoid((u / (1 - beta^t)) / eta), w <- (1 - lr lambda) w - lr (g + xi)(1 - u_bar), xi ~ N(0, sigma^2);
eta is the largest running utility of the whole network after the previous step."""
import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

from lopbook import methods
from lopbook.engine import Lockstep, RunSettings
from lopbook.learners import Learner
from lopbook.nets import MLP
from lopbook.runtime import make_generator

IN, OUT, WIDTH = 12, 3, 10


def net(seed=0):
    return MLP(IN, WIDTH, 2, OUT, seed=seed)


def batches(seed, n, batch=4):
    g = make_generator(seed)
    return [(torch.rand(batch, IN, generator=g), torch.randint(0, OUT, (batch,), generator=g)) for _ in range(n)]


def direction(method, i, p, grad):
    """The UPGD direction: the hook replaces the gradient by it, in place (and returns None)."""
    grad = grad.clone()
    assert method.gradient(i, p, grad) is None
    return grad


def test_the_gate_on_a_hand_computed_example():
    """One weight, by hand: w = 0.5, g = -2, previous u = 0.3, beta = 0.5, first step (t = 1), and the largest
    running utility of the network so far 2.0 (another weight's):
    u = 0.5 * 0.3 + 0.5 * (2 * 0.5) = 0.65, corrected 0.65 / (1 - 0.5) = 1.3, u_bar = sigmoid(1.3 / 2) = sigmoid(0.65);
    without noise the direction is g (1 - u_bar) + lambda w."""
    lam = 0.1
    learner = Learner(net(), 0.01, method="upgd", beta_utility=0.5, noise_std=0.0, weight_decay=lam)
    method, nets = learner.method, learner.nets
    p = nets.params[0]
    with torch.no_grad():
        p[0, 0, 0] = 0.5
        method.utilities[0].zero_()
        method.utilities[0][0, 0, 0] = 0.3
        method.utilities[1][0, 0] = 2.0              # the network's largest utility, on a bias
    grad = torch.zeros_like(p)
    grad[0, 0, 0] = -2.0
    step = direction(method, 0, p, grad)
    u_bar = 1 / (1 + math.exp(-0.65))
    assert float(method.utilities[0][0, 0, 0]) == pytest.approx(0.65)
    assert float(step[0, 0, 0]) == pytest.approx(-2.0 * (1 - u_bar) + lam * 0.5, rel=1e-6)
    # a weight with no gradient and no utility: gate 1/2 on nothing, only the weight decay
    torch.testing.assert_close(step[0, 1], lam * p[0, 1], rtol=1e-6, atol=1e-7)


def test_with_no_positive_utility_yet_every_gate_is_one_half():
    learner = Learner(net(), 0.01, method="upgd", noise_std=0.0, weight_decay=0.0)
    method, nets = learner.method, learner.nets
    p = nets.params[0]
    grad = torch.randn(p.shape, generator=make_generator(1))
    step = direction(method, 0, p, grad)               # step 1: no running utility before it
    torch.testing.assert_close(step, grad / 2)


def test_a_weight_of_high_utility_barely_moves_and_a_useless_one_gets_the_full_step():
    """Early in training (t = 10, beta = 0.9999) the bias correction makes u / (1 - beta^t) / eta large for the
    most useful weight: its gate 1 - u_bar is ~0, so it only decays; a weight of negative utility gets the whole
    gradient and noise."""
    learner = Learner(net(), 0.01, method="upgd", noise_std=0.1, weight_decay=0.0)
    method, nets = learner.method, learner.nets
    nets.step = 9
    p = nets.params[0]
    with torch.no_grad():
        method.utility.fill_(1e-3)                    # eta = 1e-3 after the last step
        method.utilities[0][0, 0, 1] = -1.0           # a weight whose removal has helped so far
        p[0, 0, 0], p[0, 0, 1] = 1.0, 1.0
    grad = torch.zeros_like(p)
    grad[0, 0, 0] = -1.0                              # utility -g w = +1: the most useful weight
    grad[0, 0, 1] = +1.0                              # utility -1: harmful
    step = direction(method, 0, p, grad)
    noise = method.noises[0][0, 0, 1]                 # this step's sigma xi
    assert 0 < abs(float(noise)) < 0.6                # sigma = 0.1: xi within 6 standard deviations
    assert abs(float(step[0, 0, 0])) < 1e-6           # barely moves: 1 - u_bar = 1 - sigmoid(~1000)
    assert float(step[0, 0, 1]) == pytest.approx(float(1.0 + noise), rel=1e-4)


def upgd_by_hand(net, data, lr, beta, sigma, lam, seed):
    """The rule written out as an optimiser (as in the authors' code), with eta from the previous step and the noise
    drawn per run as one flat normal vector from the run's generator, parameter after parameter."""
    params = list(net.parameters())
    utilities = [torch.zeros_like(p) for p in params]
    generator = make_generator(seed)
    for t, (x, y) in enumerate(data, start=1):
        grads = torch.autograd.grad(F.cross_entropy(net(x), y), params)
        eta = max(float(u.max()) for u in utilities)
        noise = torch.empty(sum(p.numel() for p in params)).normal_(generator=generator)
        noises = noise.split([p.numel() for p in params])
        with torch.no_grad():
            for p, g, u, xi in zip(params, grads, utilities, noises):
                u.mul_(beta).add_((1 - beta) * -g * p)
                u_bar = torch.sigmoid(u / (1 - beta**t) / eta) if eta > 0 else torch.full_like(u, 0.5)
                p.mul_(1 - lr * lam).sub_(lr * (g + sigma * xi.view(p.shape)) * (1 - u_bar))


def test_sgd_steps_are_the_upgd_rule():
    lr, beta, sigma, lam = 0.05, 0.9, 0.1, 0.01
    mine, theirs = net(3), net(3)
    learner = Learner(mine, lr, method="upgd", beta_utility=beta, noise_std=sigma, weight_decay=lam, seed=7)
    data = batches(2, 5)
    for x, y in data:
        learner.learn(x, y)
    upgd_by_hand(theirs, data, lr, beta, sigma, lam, seed=7)
    for a, b in zip(mine.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_noise_is_each_runs_own_and_reproducible():
    """Runs in lockstep draw their noise from their own generators: two runs with the same seed and data stay
    identical, a third with another seed does not, and the same seeds give the same numbers again."""
    def train():
        runs = [RunSettings(seed=s, step_size=0.05, method="upgd", hyperparameters=methods.settings("upgd"))
                for s in (1, 1, 2)]
        engine = Lockstep([net(0)] * 3, runs)
        for x, y in batches(4, 10):
            engine.learn(x.expand(3, -1, -1).clone(), y.expand(3, -1).clone())
        return engine.params
    first, again = train(), train()
    assert torch.equal(first[0][0], first[0][1])
    assert not torch.equal(first[0][0], first[0][2])
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_checkpoint_round_trip_continues_identically():
    runs = [RunSettings(seed=s, step_size=0.05, method="upgd",
                        hyperparameters=methods.settings("upgd", beta_utility=b)) for s, b in ((1, 0.99), (2, 0.9))]
    g = make_generator(8)
    data = [(torch.rand(2, 1, IN, generator=g), torch.randint(0, OUT, (2, 1), generator=g)) for _ in range(30)]
    engine = Lockstep([net(1), net(2)], runs)
    for x, y in data[:15]:
        engine.learn(x, y)
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
    assert torch.equal(engine.method_of(0)[0].utility, other.method_of(0)[0].utility)


def test_it_needs_the_gradients_so_sgd_is_not_fused():
    engine = Lockstep([net(0)], [RunSettings(seed=0, step_size=0.01, method="upgd")])
    assert not engine.fused_sgd


@pytest.mark.parametrize("values,match", [(dict(beta_utility=1.0), "beta_utility"), (dict(noise_std=-1.0), "noise_std"),
                                          (dict(weight_decay=-0.1), "weight_decay"), (dict(kappa=2.0), "weight_clipping")])
def test_bad_hyperparameters_are_refused(values, match):
    with pytest.raises(ValueError, match=match):
        methods.settings("upgd", **values)
