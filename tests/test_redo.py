"""ReDo (Sokar, Agarwal, Castro, Evci 2023): every F steps, units whose normalised activity
s_i = E|h_i| / mean_k E|h_k| is at most tau get fresh incoming weights, zero bias and zero outgoing weights."""
import math

import numpy as np
import pytest
import torch

from lopbook import methods
from lopbook.engine import Lockstep, RunSettings
from lopbook.learners import Learner
from lopbook.nets import MLP
from lopbook.runtime import make_generator

IN, OUT, WIDTH = 12, 3, 10


def batches(seed, n, batch=4):
    g = make_generator(seed)
    return [(torch.rand(batch, IN, generator=g), torch.randint(0, OUT, (batch,), generator=g)) for _ in range(n)]


def redo_learner(seed=0, optimizer="sgd", **hp):
    net = MLP(IN, WIDTH, 2, OUT, seed=seed)
    return Learner(net, 1e-3 if optimizer == "adam" else 0.05, method="redo", optimizer=optimizer,
                   momentum=0.9 if optimizer == "sgd" else 0.0, seed=seed + 1, **hp)


def test_dormant_units_known_answer():
    learner = redo_learner(threshold=0.1)
    method = learner.method
    method.activity[0][0] = torch.tensor([1.0, 1.0, 1.0, 0.05, 0.0, 1.0, 1.0, 1.0, 2.0, 0.9])
    # mean 0.895: scores 1.117 ... 0.0559, 0, ..., 2.235, 1.006
    assert method.dormant(0)[0].nonzero().flatten().tolist() == [3, 4]
    method.tau.fill_(0.0)
    assert method.dormant(0)[0].nonzero().flatten().tolist() == [4]     # tau = 0: only the silent unit
    method.tau.fill_(1.01)
    assert method.dormant(0)[0].nonzero().flatten().tolist() == [3, 4, 9]
    method.activity[1][0].zero_()                                        # a silent layer: every unit is dormant
    assert method.dormant(1)[0].all()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_dormant_units_are_recycled_every_period_steps_and_only_then(optimizer):
    period = 5
    learner = redo_learner(optimizer=optimizer, threshold=0.1, period=period)
    net = learner.net
    weak = [2, 7]
    with torch.no_grad():                                 # nearly silent units: active, but far below average
        net.hidden[0].weight[weak] *= 0.01
        net.hidden[0].bias[weak] = 0.0
    data = batches(3, 2 * period)
    for x, y in data[:period - 1]:
        learner.learn(x, y)
    assert learner.method.recycled.sum() == 0             # no check before step `period`
    state = learner.optimizer.state
    w_in, b_in, w_out = net.hidden[0].weight, net.hidden[0].bias, net.hidden[1].weight
    buffers = [k for k in state[w_out] if k != "step"]
    assert all(torch.count_nonzero(state[w_out][k][:, weak]) > 0 for k in buffers)
    learner.learn(*data[period - 1])                       # step `period`: the check
    recycled = learner.method.recycled[0]
    assert recycled[0] >= len(weak)                        # the weak units, perhaps others (scores <= 0.1)
    # the recycled units of layer 1 have zero outgoing weights, and got whole fresh rows of incoming ones
    # (their entries from recycled units of layer 0 too, which is harmless: they feed nothing yet)
    next_recycled = [v for v in range(WIDTH) if torch.count_nonzero(net.output.weight[:, v]) == 0]
    rows = [v for v in range(WIDTH) if v not in next_recycled]
    units = [u for u in range(WIDTH) if torch.count_nonzero(w_out[rows, u]) == 0]
    assert set(weak) <= set(units) and len(units) == recycled[0]
    bound = math.sqrt(6 / IN)
    assert (w_in[weak].abs() <= bound).all() and w_in[weak].abs().max() > 0.05 * bound   # drawn afresh
    assert (b_in[weak].detach() == 0).all()
    alive = [u for u in range(WIDTH) if u not in units]
    assert torch.count_nonzero(w_out[:, alive]) > 0
    for k in buffers:                                      # optimiser state of the new units' weights: zero
        assert torch.count_nonzero(state[w_out][k][:, units]) == 0
        assert torch.count_nonzero(state[w_out][k][next_recycled]) == 0
        assert torch.count_nonzero(state[w_in][k][units]) == 0
        assert torch.count_nonzero(state[b_in][k][units]) == 0
        assert torch.count_nonzero(state[w_in][k][alive]) > 0
    for x, y in data[period:-1]:                           # nothing more until the next check
        learner.learn(x, y)
    assert learner.method.recycled[0].tolist() == recycled.tolist()


def test_recycling_does_not_change_the_output():
    """New units have zero outgoing weights: right after a recycling the network computes what it computed
    with the dormant units removed, which for units silent on every input is what it computed before."""
    learner = redo_learner(threshold=0.0, period=1)
    net = learner.net
    with torch.no_grad():
        net.hidden[1].bias[[0, 5]] = -1e4
    x, y = batches(4, 1)[0]
    method = learner.method
    _, hidden = net(x, return_hidden=True)
    method.activity[0].zero_()
    method.activity[1].zero_()
    method.activity[1] += hidden[1].abs().sum(0)
    method.activity[0] += 1.0                              # nothing dormant in the first layer
    with torch.no_grad():          # the units silent on x (the two made so, and any others) are recycled
        before = net(x)
        method.recycle(1, method.dormant(1))
        torch.testing.assert_close(net(x), before)
    silent = int((hidden[1].abs().sum(0) == 0).sum())
    assert silent >= 2 and method.recycled[0].tolist() == [0, silent]


def test_runs_recycle_their_own_units_in_lockstep():
    """Two runs with different thresholds in one engine: each recycles what its own scores say."""
    hp = [methods.settings("redo", threshold=t, period=10) for t in (0.0, 0.6)]
    runs = [RunSettings(seed=s, step_size=0.05, method="redo", hyperparameters=h) for s, h in zip((1, 2), hp)]
    engine = Lockstep([MLP(IN, WIDTH, 2, OUT, seed=s) for s in (1, 2)], runs)
    g = make_generator(6)
    for _ in range(10):
        engine.learn(torch.rand(2, 1, IN, generator=g), torch.randint(0, OUT, (2, 1), generator=g))
    method, _ = engine.method_of(0)
    assert method.recycled[0].sum() <= method.recycled[1].sum()
    assert method.recycled[1].sum() > 0


@pytest.mark.parametrize("values,match", [(dict(threshold=-0.1), "threshold"), (dict(period=0), "period"),
                                          (dict(period=2.5), "period"), (dict(replacement_rate=0.1), "continual")])
def test_bad_hyperparameters_are_refused(values, match):
    with pytest.raises(ValueError, match=match):
        methods.settings("redo", **values)
