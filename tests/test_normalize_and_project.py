"""Normalize-and-Project (Lyle et al. 2024): layer norm before every ReLU, and after every step each hidden layer's
weights (with its bias) rescaled to the norm they had at initialisation; the output layer is not projected."""
import copy
import io

import pytest
import torch

from lopbook import methods
from lopbook.engine import Lockstep, RunSettings
from lopbook.learners import Learner
from lopbook.nets import MLP, ConvNet
from lopbook.runtime import make_generator

IN, OUT, WIDTH = 12, 3, 10


def net(seed=0, norm="layer"):
    return MLP(IN, WIDTH, 2, OUT, norm=norm, seed=seed)


def batches(seed, n, batch=4):
    g = make_generator(seed)
    return [(torch.rand(batch, IN, generator=g), torch.randint(0, OUT, (batch,), generator=g)) for _ in range(n)]


def layer_norms(learner):
    nets = learner.nets
    hidden = [torch.cat([w[0].flatten(), b[0]]).norm() for w, b in zip(nets.weights[:-1], nets.biases[:-1])]
    affine = [torch.cat([g[0], s[0]]).norm() for g, s in zip(nets.gains, nets.shifts)]
    return hidden, affine, nets.weights[-1][0].norm()


def test_networks_without_layer_norm_are_refused_with_the_reason():
    assert "layer norm" in methods.get("normalize_and_project").supports(net(norm=None))
    assert methods.get("normalize_and_project").supports(ConvNet(3, 2, seed=0)) is not None
    assert methods.get("normalize_and_project").supports(net()) is None
    with pytest.raises(ValueError, match="cannot train this network: Normalize-and-Project needs layer norm"):
        Learner(net(norm=None), 0.01, method="normalize_and_project")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_every_hidden_layer_keeps_its_initial_norm_after_every_step(optimizer):
    lr = 0.5 if optimizer == "sgd" else 0.05
    nap = Learner(net(1), lr, method="normalize_and_project", optimizer=optimizer)
    plain = Learner(net(1), lr, optimizer=optimizer)
    hidden0, affine0, out0 = layer_norms(nap)
    assert all(float(n) == pytest.approx(WIDTH ** 0.5) for n in affine0)       # gains 1, shifts 0
    for x, y in batches(2, 30):
        nap.learn(x, y)
        plain.learn(x, y)
        hidden, affine, out = layer_norms(nap)
        for n, n0 in zip(hidden + affine, hidden0 + affine0):
            assert float(n) == pytest.approx(float(n0), rel=1e-5)
    assert float(out) != pytest.approx(float(out0), rel=1e-3)        # the output layer is left alone
    grown = layer_norms(plain)[0]
    assert all(float(n) > float(n0) * 1.01 for n, n0 in zip(grown, hidden0))  # without NaP they grow


def test_with_free_gains_and_shifts_the_projection_does_not_change_the_function():
    """LN(c (W h + b)) = LN(W h + b): scaling a hidden layer and projecting it back leaves the outputs as they were."""
    nap = Learner(net(3), 0.1, method="normalize_and_project", affine="free")
    for x, y in batches(4, 5):
        nap.learn(x, y)
    x = torch.rand(8, IN, generator=make_generator(5))
    with torch.no_grad():
        before = nap.net(x)
        for layer in nap.net.hidden:
            layer.weight.mul_(3.0)
            layer.bias.mul_(3.0)
        nap.method.after_step([])
        torch.testing.assert_close(nap.net(x), before, rtol=1e-4, atol=1e-5)
    hidden, _, _ = layer_norms(nap)
    for n, n0 in zip(hidden, nap.method.initial_norms[0]):
        assert float(n) == pytest.approx(float(n0), rel=1e-6)
    gains = [g[0] for g in nap.nets.gains]
    assert any(not torch.equal(g, torch.ones_like(g)) for g in gains)      # trained, not projected


def test_each_run_keeps_its_own_norms_and_they_are_checkpointed():
    runs = [RunSettings(seed=s, step_size=0.3, method="normalize_and_project") for s in (1, 2)]
    g = make_generator(6)
    data = [(torch.rand(2, 1, IN, generator=g), torch.randint(0, OUT, (2, 1), generator=g)) for _ in range(30)]
    engine = Lockstep([net(1), net(2)], runs)
    method, _ = engine.method_of(0)
    start = method.initial_norms.clone()
    assert not torch.equal(start[0], start[1])
    for x, y in data[:15]:
        engine.learn(x, y)
    for r in range(2):
        for l in range(2):
            norm = torch.cat([engine.weights[l][r].flatten(), engine.biases[l][r]]).norm()
            assert float(norm) == pytest.approx(float(start[r, l]), rel=1e-5)
    buffer = io.BytesIO()
    torch.save([engine.run_state(r) for r in range(2)], buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    other = Lockstep([net(10), net(11)], runs)              # other starting norms: they come from the state
    for r in range(2):
        other.load_run_state(r, copy.deepcopy(saved[r]))
    assert torch.equal(other.method_of(0)[0].initial_norms, start)
    for x, y in data[15:]:
        assert torch.equal(engine.learn(x, y), other.learn(x, y))
    assert all(torch.equal(a, b) for a, b in zip(engine.params, other.params))


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="affine"):
        methods.settings("normalize_and_project", affine="decay")
