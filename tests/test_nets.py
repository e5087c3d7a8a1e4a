"""Tests of lopbook.nets: the paper's MLP and ConvNet."""
import math

import pytest
import torch

from lopbook.nets import MLP, ConvNet, _dropout, kaiming_bound
from lopbook.runtime import make_generator


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


def _all_equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------------------- MLP


@pytest.mark.parametrize("width,depth", [(16, 1), (32, 3), (7, 4)])
def test_mlp_shapes_and_hidden(width, depth):
    net = MLP(in_features=784, width=width, depth=depth, out_features=10, seed=0)
    x = torch.rand(5, 784, generator=make_generator(1))
    out, hidden = net(x, return_hidden=True)
    assert out.shape == (5, 10)
    assert len(hidden) == depth
    for h in hidden:
        assert h.shape == (5, width)
        assert (h >= 0).all()
    assert net.hidden_sizes == [width] * depth
    layers = net.weight_layers()
    assert [tuple(l.weight.shape) for l in layers] == [(width, 784)] + [(width, width)] * (depth - 1) + [(10, width)]
    # forward without return_hidden gives the same logits
    assert torch.equal(net(x), out)


def test_mlp_hidden_activations_are_the_relu_of_the_layers():
    net = MLP(in_features=12, width=9, depth=2, out_features=3, seed=4)
    x = torch.randn(6, 12, generator=make_generator(0))
    out, hidden = net(x, return_hidden=True)
    h0 = torch.relu(x @ net.hidden[0].weight.T + net.hidden[0].bias)
    h1 = torch.relu(h0 @ net.hidden[1].weight.T + net.hidden[1].bias)
    torch.testing.assert_close(hidden[0], h0)
    torch.testing.assert_close(hidden[1], h1)
    torch.testing.assert_close(out, h1 @ net.output.weight.T + net.output.bias)


def test_mlp_kaiming_uniform_init():
    net = MLP(in_features=784, width=256, depth=2, out_features=10, seed=3)
    for layer in net.weight_layers():
        fan_in = layer.weight.shape[1]
        bound = math.sqrt(6.0 / fan_in)
        assert kaiming_bound(layer) == pytest.approx(bound)
        assert layer.weight.abs().max() <= bound
        assert torch.count_nonzero(layer.bias) == 0
    # a big layer: the empirical variance is that of U(-b, b), b^2 / 3 = 2 / fan_in, and it spans the interval
    w = net.hidden[0].weight.detach().double()
    bound = math.sqrt(6.0 / 784)
    assert w.var().item() == pytest.approx(2.0 / 784, rel=0.02)
    assert w.mean().item() == pytest.approx(0.0, abs=0.02 * bound)
    assert w.abs().max().item() > 0.99 * bound


def test_mlp_seed_determinism_and_independence_from_global_rng():
    torch.manual_seed(123)
    a = MLP(in_features=30, width=20, depth=2, seed=7)
    torch.manual_seed(999)
    b = MLP(in_features=30, width=20, depth=2, seed=7)
    c = MLP(in_features=30, width=20, depth=2, seed=8)
    assert _all_equal(_params(a), _params(b))
    weights_a = [l.weight for l in a.weight_layers()]
    weights_c = [l.weight for l in c.weight_layers()]
    assert all(not torch.equal(x, y) for x, y in zip(weights_a, weights_c))


def test_reset_parameters_with_seed_restores_the_initial_network():
    net = MLP(in_features=10, width=8, depth=2, seed=5)
    initial = _params(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.reset_parameters(5)
    assert _all_equal(initial, _params(net))


@pytest.mark.parametrize("kwargs", [dict(width=0), dict(depth=-1), dict(in_features=0), dict(out_features=0),
                                    dict(activation="gelu"), dict(depth=0, dropout=0.1)])
def test_mlp_invalid_sizes(kwargs):
    with pytest.raises(ValueError):
        MLP(**{**dict(in_features=4, width=4, depth=1, out_features=2), **kwargs})


def test_mlp_without_hidden_layers_is_a_linear_model():
    net = MLP(in_features=5, width=3, depth=0, out_features=1, seed=0)
    assert net.hidden_sizes == [] and len(net.weight_layers()) == 1
    x = torch.rand(4, 5)
    out, hidden = net(x, return_hidden=True)
    assert hidden == []
    torch.testing.assert_close(out, x @ net.output.weight.T + net.output.bias)


@pytest.mark.parametrize("activation,function", [
    ("relu", torch.relu), ("leaky_relu", lambda z: torch.where(z > 0, z, 0.01 * z)), ("elu", torch.nn.functional.elu),
    ("swish", lambda z: z * torch.sigmoid(z)), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid), ("linear", lambda z: z)])
def test_mlp_activations(activation, function):
    net = MLP(in_features=6, width=8, depth=2, out_features=3, seed=1, activation=activation)
    x = torch.randn(5, 6)
    _, hidden = net(x, return_hidden=True)
    torch.testing.assert_close(hidden[0], function(net.hidden[0](x)))
    torch.testing.assert_close(hidden[1], function(net.hidden[1](hidden[0])))


@pytest.mark.parametrize("activation,gain", [("relu", math.sqrt(2)), ("tanh", 5 / 3), ("sigmoid", 1.0),
                                             ("leaky_relu", math.sqrt(2 / (1 + 0.01 ** 2))), ("linear", 1.0)])
def test_mlp_kaiming_gain_of_each_activation(activation, gain):
    """Kaiming-uniform: U(-b, b) with b = gain * sqrt(3 / fan_in), the gains of Nature's Methods."""
    net = MLP(in_features=400, width=300, depth=1, out_features=2, seed=2, activation=activation,
              init="kaiming_linear_output")
    bound = gain * math.sqrt(3 / 400)
    w = net.hidden[0].weight.detach()
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    assert net.output.weight.abs().max() <= math.sqrt(3 / 300)       # the output layer: linear gain


# ----------------------------------------------------------------------------------------------------- ConvNet


def test_convnet_shapes():
    net = ConvNet(seed=0)
    x = torch.rand(3, 3, 32, 32, generator=make_generator(0))
    out, hidden = net(x, return_hidden=True)
    assert out.shape == (3, 2)
    assert [tuple(h.shape) for h in hidden] == [(3, 32, 14, 14), (3, 64, 6, 6), (3, 128, 2, 2), (3, 128), (3, 128)]
    assert all((h >= 0).all() for h in hidden)
    assert net.hidden_sizes == [32, 64, 128, 128, 128]
    assert len(net.weight_layers()) == 6
    assert torch.equal(net(x), out)


def test_convnet_kaiming_uniform_init_and_seed():
    net = ConvNet(seed=11)
    fan_ins = [3 * 5 * 5, 32 * 3 * 3, 64 * 3 * 3, 512, 128, 128]
    for layer, fan_in in zip(net.weight_layers(), fan_ins):
        bound = math.sqrt(6.0 / fan_in)
        assert kaiming_bound(layer) == pytest.approx(bound)
        assert layer.weight.abs().max() <= bound
        assert torch.count_nonzero(layer.bias) == 0
    # conv3 has 73,728 weights: variance of U(-b, b)
    w = net.convs[2].weight.detach().double()
    assert w.var().item() == pytest.approx(2.0 / fan_ins[2], rel=0.03)
    torch.manual_seed(0)
    same = ConvNet(seed=11)
    other = ConvNet(seed=12)
    assert _all_equal(_params(net), _params(same))
    assert not torch.equal(net.convs[0].weight, other.convs[0].weight)


def test_convnet_reset_output():
    net = ConvNet(seed=1)
    x = torch.rand(4, 3, 32, 32, generator=make_generator(2))
    assert net(x).abs().sum() > 0
    conv_before = net.convs[0].weight.detach().clone()
    net.reset_output()
    assert torch.count_nonzero(net.output.weight) == 0
    assert torch.count_nonzero(net.output.bias) == 0
    assert torch.equal(net(x), torch.zeros(4, 2))
    assert torch.equal(net.convs[0].weight, conv_before)


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (3, 32, 32), (2, 3, 32, 31), (2, 3 * 32 * 32)])
def test_convnet_wrong_input_shape(shape):
    net = ConvNet(seed=0)
    with pytest.raises(ValueError):
        net(torch.zeros(shape))


def test_convnet_rejects_layer_norm():
    with pytest.raises(ValueError):
        ConvNet(norm="layer")


# ----------------------------------------------------------------------------------------------------- dropout / norm


@pytest.mark.parametrize("make", [lambda **k: MLP(in_features=20, width=16, depth=2, **k), lambda **k: ConvNet(**k)],
                         ids=["mlp", "convnet"])
def test_dropout_uses_the_passed_generator(make):
    net = make(dropout=0.5, seed=3)
    x = torch.rand(4, 20) if isinstance(net, MLP) else torch.rand(4, 3, 32, 32)
    net.train()
    torch.manual_seed(0)
    a = net(x, generator=make_generator(42))
    torch.manual_seed(1)  # the global generator must not matter
    b = net(x, generator=make_generator(42))
    c = net(x, generator=make_generator(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the generator advances: two draws in a row differ
    g = make_generator(42)
    assert not torch.equal(net(x, generator=g), net(x, generator=g))


@pytest.mark.parametrize("make", [lambda **k: MLP(in_features=20, width=16, depth=2, **k), lambda **k: ConvNet(**k)],
                         ids=["mlp", "convnet"])
def test_dropout_eval_mode_equals_net_without_dropout(make):
    with_dropout = make(dropout=0.5, seed=3)
    without = make(dropout=0.0, seed=3)
    x = torch.rand(4, 20) if isinstance(with_dropout, MLP) else torch.rand(4, 3, 32, 32)
    with_dropout.eval()
    a = with_dropout(x, generator=make_generator(1))
    b = with_dropout(x, generator=make_generator(2))
    assert torch.equal(a, b)
    assert torch.equal(a, without(x))
    # in train mode dropout changes the output
    with_dropout.train()
    assert not torch.equal(with_dropout(x, generator=make_generator(1)), a)


def test_dropout_mask_rate_and_scaling():
    p = 0.3
    h = torch.full((200, 500), 2.0)
    out = _dropout(h, p, make_generator(0))
    dropped = (out == 0).double().mean().item()
    assert dropped == pytest.approx(p, abs=0.01)
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 2.0 / (1 - p)))


def test_batch_norm_batch_of_one_in_training_is_refused():
    net = MLP(in_features=10, width=8, depth=2, norm="batch", seed=0)
    net.train()
    with pytest.raises(ValueError, match="layer"):
        net(torch.rand(1, 10))
    # two examples are fine, and one example is fine in eval mode
    assert net(torch.rand(2, 10)).shape == (2, 10)
    net.eval()
    assert net(torch.rand(1, 10)).shape == (1, 10)


def test_convnet_batch_norm_batch_of_one_in_training_is_refused():
    net = ConvNet(norm="batch", seed=0)
    net.train()
    with pytest.raises(ValueError, match="mini-batches"):
        net(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_norm_layers_are_used(norm):
    net = MLP(in_features=10, width=8, depth=2, norm=norm, seed=0)
    plain = MLP(in_features=10, width=8, depth=2, seed=0)
    assert len(net.norms) == 2
    x = torch.rand(5, 10, generator=make_generator(0))
    net.train()
    _, hidden = net(x, return_hidden=True)
    # the same weights, but normalised pre-activations: the outputs differ from the plain network's
    assert not torch.allclose(net(x), plain(x))
    if norm == "layer":
        z = x @ net.hidden[0].weight.T + net.hidden[0].bias
        z = (z - z.mean(1, keepdim=True)) / torch.sqrt(z.var(1, unbiased=False, keepdim=True) + 1e-5)
        torch.testing.assert_close(hidden[0], torch.relu(z))
    else:
        z = x @ net.hidden[0].weight.T + net.hidden[0].bias
        z = (z - z.mean(0, keepdim=True)) / torch.sqrt(z.var(0, unbiased=False, keepdim=True) + 1e-5)
        torch.testing.assert_close(hidden[0], torch.relu(z))


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_invalid_dropout(dropout):
    with pytest.raises(ValueError):
        MLP(in_features=4, width=4, depth=1, dropout=dropout)
    with pytest.raises(ValueError):
        ConvNet(dropout=dropout)


@pytest.mark.parametrize("norm", ["group", "Layer", "instance"])
def test_invalid_norm(norm):
    with pytest.raises(ValueError):
        MLP(in_features=4, width=4, depth=1, norm=norm)
    with pytest.raises(ValueError):
        ConvNet(norm=norm)


def test_convnet_forward_matches_the_paper_architecture():
    """conv5x5 -> ReLU -> pool, conv3x3 -> ReLU -> pool, conv3x3 -> ReLU -> pool, flatten, fc, fc, output."""
    import torch.nn.functional as F

    net = ConvNet(seed=4)
    with torch.no_grad():  # non-zero biases, so that they are checked too
        for layer in net.weight_layers():
            layer.bias.uniform_(-0.1, 0.1, generator=make_generator(0))
    x = torch.rand(2, 3, 32, 32, generator=make_generator(1))
    out, hidden = net(x, return_hidden=True)
    w = [(layer.weight.detach(), layer.bias.detach()) for layer in net.weight_layers()]
    h = x
    expected = []
    for weight, bias in w[:3]:
        h = F.max_pool2d(torch.relu(F.conv2d(h, weight, bias)), kernel_size=2, stride=2)
        expected.append(h)
    h = h.reshape(2, -1)
    for weight, bias in w[3:5]:
        h = torch.relu(h @ weight.T + bias)
        expected.append(h)
    for a, b in zip(hidden, expected):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(out, h @ w[5][0].T + w[5][1])
