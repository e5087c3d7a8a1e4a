"""Tests of lopbook.metrics on inputs whose answers are known."""
import math

import pytest
import torch

from lopbook.metrics import (dead_units, effective_rank, metrics_from_activations, plasticity_metrics,
                             weight_magnitude)
from lopbook.nets import MLP, ConvNet
from lopbook.runtime import make_generator


def _orthogonal(n, seed):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=make_generator(seed), dtype=torch.float64))
    return q


def _with_singular_values(rows, cols, sigma, seed=0):
    """A rows x cols matrix whose non-zero singular values are ``sigma``."""
    u, v = _orthogonal(rows, seed), _orthogonal(cols, seed + 1)
    s = torch.zeros(rows, cols, dtype=torch.float64)
    for i, value in enumerate(sigma):
        s[i, i] = value
    return u @ s @ v.T


def _entropy_rank(sigma):
    p = [s / sum(sigma) for s in sigma if s > 0]
    return math.exp(-sum(q * math.log(q) for q in p))


# ----------------------------------------------------------------------------------------------------- effective rank


@pytest.mark.parametrize("n", [1, 4, 17])
def test_effective_rank_identity(n):
    assert effective_rank(torch.eye(n)) == pytest.approx(n, rel=1e-9)


@pytest.mark.parametrize("r", [1, 2, 5, 8])
def test_effective_rank_equal_singular_values(r):
    a = _with_singular_values(12, 8, [2.5] * r, seed=r)
    assert effective_rank(a) == pytest.approx(r, rel=1e-6)
    assert effective_rank(a.float()) == pytest.approx(r, rel=1e-4)


def test_effective_rank_rank_one():
    u = torch.randn(30, 1, generator=make_generator(0))
    v = torch.randn(1, 9, generator=make_generator(1))
    assert effective_rank(u @ v) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("shape", [(5, 3), (1, 1), (4, 2, 2)])
def test_effective_rank_zero_matrix(shape):
    assert effective_rank(torch.zeros(shape)) == 0.0


def test_effective_rank_known_spectrum():
    a = _with_singular_values(6, 4, [3.0, 1.0], seed=3)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(a) == pytest.approx(expected, rel=1e-9)
    b = _with_singular_values(10, 10, [5.0, 4.0, 2.0, 0.5], seed=7)
    assert effective_rank(b) == pytest.approx(_entropy_rank([5.0, 4.0, 2.0, 0.5]), rel=1e-9)
    # strictly between 1 and the rank when the singular values differ
    assert 1.0 < effective_rank(b) < 4.0


def test_effective_rank_scale_and_rotation_invariance():
    a = torch.randn(20, 7, generator=make_generator(5), dtype=torch.float64)
    a[:, 3] *= 10.0  # uneven spectrum
    base = effective_rank(a)
    assert 1.0 < base < 7.0
    assert effective_rank(3.7 * a) == pytest.approx(base, rel=1e-9)
    assert effective_rank(1e-3 * a) == pytest.approx(base, rel=1e-9)
    rotated = _orthogonal(20, 11) @ a @ _orthogonal(7, 12)
    assert effective_rank(rotated) == pytest.approx(base, rel=1e-9)


def test_effective_rank_flattens_extra_axes():
    a = torch.randn(10, 2, 3, generator=make_generator(2))
    assert effective_rank(a) == pytest.approx(effective_rank(a.reshape(10, 6)), rel=1e-12)


# ----------------------------------------------------------------------------------------------------- dead units


def test_dead_units_dense():
    h = torch.rand(8, 6, generator=make_generator(0)) + 0.1
    assert dead_units(h) == 0
    h[:, [1, 4]] = 0.0
    assert dead_units(h) == 2
    h[3, 5] = 0.0  # zero on one example only: not dead
    assert dead_units(h) == 2
    h[:, 0] = 0.0
    h[7, 0] = 1e-8  # alive on one example: not dead
    assert dead_units(h) == 2
    assert dead_units(torch.zeros(3, 5)) == 5


def test_dead_units_conv_channels():
    h = torch.rand(4, 5, 3, 3, generator=make_generator(1)) + 0.1
    h[:, 2] = 0.0           # zero everywhere: dead
    h[:, 4] = 0.0
    h[1, 4, 2, 0] = 0.5     # zero except one position of one example: alive
    h[:, 0, 1, 1] = 0.0     # zero at one position of every example: alive
    assert dead_units(h) == 1
    h[:, 0] = 0.0
    assert dead_units(h) == 2


# ----------------------------------------------------------------------------------------------------- weight magnitude


def test_weight_magnitude_known_tensors():
    a = torch.tensor([[1.0, -3.0]])               # mean |w| 2, 2 entries
    b = torch.tensor([[-1.0, 1.0], [1.0, -1.0]])  # mean |w| 1, 4 entries
    c = torch.zeros(2, 1, 1, 1)                   # mean |w| 0, 2 entries
    per_layer, total = weight_magnitude([a, b, c])
    assert per_layer == pytest.approx([2.0, 1.0, 0.0])
    # weighted by element count: (4 + 4 + 0) / 8, not the mean of the per-layer means (1)
    assert total == pytest.approx(1.0)
    per_layer, total = weight_magnitude([a, b])
    assert total == pytest.approx(8.0 / 6.0)
    assert total != pytest.approx(sum(per_layer) / 2)


# ----------------------------------------------------------------------------------------------------- plasticity_metrics


def _manual_hidden(net, x):
    hidden, h = [], x
    for layer in net.hidden:
        h = torch.relu(h @ layer.weight.T + layer.bias)
        hidden.append(h)
    return hidden


@pytest.mark.parametrize("training", [True, False])
def test_plasticity_metrics_mlp_with_dead_units(training):
    net = MLP(in_features=20, width=16, depth=2, out_features=4, seed=0)
    dead = [0, 3, 5, 11]
    with torch.no_grad():
        net.hidden[0].bias[dead] = -1e4  # inputs in [0, 1]: pre-activation <= 20 * sqrt(6 / 20) < 1e4
    net.train(training)
    probe = torch.rand(50, 20, generator=make_generator(1))
    m = plasticity_metrics(net, probe)
    assert net.training is training

    with torch.no_grad():
        hidden = _manual_hidden(net, probe)
    dead_counts = [int((h == 0).all(dim=0).sum()) for h in hidden]
    assert dead_counts[0] == len(dead)
    assert m.dead_percent[0] == pytest.approx(100.0 * len(dead) / 16)
    assert m.dead_percent[1] == pytest.approx(100.0 * dead_counts[1] / 16)
    assert m.dead_percent_total == pytest.approx(100.0 * sum(dead_counts) / 32)
    # effective rank: at most the number of live units, as a percent of min(examples, width)
    assert len(m.effective_rank) == 2
    assert m.effective_rank[0] <= 16 - len(dead) + 1e-6
    for r, rp in zip(m.effective_rank, m.effective_rank_percent):
        assert 0.0 <= rp <= 100.0
        assert rp == pytest.approx(100.0 * r / 16)
    for r, h in zip(m.effective_rank, hidden):
        assert r == pytest.approx(effective_rank(h), rel=1e-5)
    weights = [l.weight.detach() for l in net.weight_layers()]
    assert m.weight_magnitude == pytest.approx([w.abs().mean().item() for w in weights], rel=1e-6)
    flat = torch.cat([w.flatten() for w in weights])
    assert m.weight_magnitude_total == pytest.approx(flat.abs().mean().item(), rel=1e-6)
    assert set(m.as_dict()) == {"dead_percent", "dead_percent_total", "effective_rank", "effective_rank_percent",
                                "weight_magnitude", "weight_magnitude_total"}


def test_plasticity_metrics_uses_eval_mode():
    """With dropout, a network in train mode is probed without dropout (deterministically)."""
    with_dropout = MLP(in_features=20, width=16, depth=2, dropout=0.5, seed=2)
    plain = MLP(in_features=20, width=16, depth=2, seed=2)
    with_dropout.train()
    probe = torch.rand(30, 20, generator=make_generator(0))
    a = plasticity_metrics(with_dropout, probe)
    b = plasticity_metrics(plain, probe)
    assert a.effective_rank == b.effective_rank
    assert a.dead_percent == b.dead_percent
    assert with_dropout.training


def test_plasticity_metrics_restores_flag_when_forward_fails():
    net = ConvNet(seed=0)
    net.train()
    with pytest.raises(ValueError):
        plasticity_metrics(net, torch.zeros(2, 3, 16, 16))
    assert net.training


def test_plasticity_metrics_convnet():
    net = ConvNet(seed=0)
    with torch.no_grad():
        net.convs[0].bias[[2, 7]] = -1e4
    probe = torch.rand(12, 3, 32, 32, generator=make_generator(3))
    m = plasticity_metrics(net, probe)
    assert len(m.dead_percent) == 5
    assert m.dead_percent[0] == pytest.approx(100.0 * 2 / 32)
    # the rank is at most min(examples, units x positions) = 12 for every layer here
    for r, rp in zip(m.effective_rank, m.effective_rank_percent):
        assert 0.0 <= rp <= 100.0
        assert rp == pytest.approx(100.0 * r / 12)
    assert len(m.weight_magnitude) == 6


def test_metrics_from_activations_rank_percent_uses_smallest_dimension():
    # 3 examples, 10 units, full rank 3 with equal singular values: 100 percent
    h = _with_singular_values(3, 10, [1.0, 1.0, 1.0]).float()
    # 20 examples, 4 units with 2 equal singular values: 50 percent
    g = _with_singular_values(20, 4, [1.0, 1.0]).float()
    m = metrics_from_activations([h, g], [torch.ones(2, 2)])
    assert m.effective_rank_percent == pytest.approx([100.0, 50.0], rel=1e-4)


def test_effective_rank_of_a_diverged_representation_is_nan():
    """A diverged run (inf/NaN activations) must not crash the metrics of the runs trained with it."""
    h = torch.ones(4, 3)
    h[0, 0] = float("nan")
    assert math.isnan(effective_rank(h))
    h[0, 0] = float("inf")
    assert math.isnan(effective_rank(h))


def test_inactive_units_known_answers():
    from lopbook.metrics import inactive_units

    z = torch.tensor([[-1.0, 4.0, 0.5, -9.0, 3.2],
                      [-2.0, -4.0, 0.7, -8.0, 3.5]])
    # relu: no gradient where z <= 0 on every example: units 0 and 3
    assert inactive_units(z, "relu") == 2
    # tanh: saturated (derivative 1 - tanh^2 < 0.01, |z| > 2.99) on every example: units 1, 3 and 4
    assert inactive_units(z, "tanh") == 3
    # sigmoid: derivative below 1% of its maximum 0.25 (|z| > ~5.3): unit 3
    assert inactive_units(z, "sigmoid") == 1
    assert inactive_units(z, "leaky_relu") == 0 and inactive_units(z, "linear") == 0
    # relu's inactive units are its dead units
    from lopbook.metrics import dead_units
    assert inactive_units(z, "relu") == dead_units(torch.relu(z))
