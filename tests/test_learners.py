"""Tests of lopbook.learners: backprop, Shrink-and-Perturb and continual backprop (Dohare et al., 2024)."""
import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

from lopbook.learners import Backprop, ContinualBackprop, ShrinkAndPerturb, lowest_utility
from lopbook.nets import MLP, ConvNet
from lopbook.runtime import make_generator

IN, OUT = 20, 4


def small_mlp(seed=0, width=8, depth=2, **kwargs):
    return MLP(in_features=IN, width=width, depth=depth, out_features=OUT, seed=seed, **kwargs)


def batches(seed, n_steps, batch=6, conv=False, n_classes=OUT):
    g = make_generator(seed)
    shape = (batch, 3, 32, 32) if conv else (batch, IN)
    return [(torch.rand(shape, generator=g), torch.randint(0, n_classes, (batch,), generator=g))
            for _ in range(n_steps)]


def params(net):
    return [p.detach().clone() for p in net.parameters()]


def assert_params_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def outgoing_mask(net, l, units):
    """Boolean mask of the entries of weight layer ``l + 1`` fed by hidden units ``units`` of layer ``l``,
    built from the layer geometry (a conv channel feeding a linear layer owns the columns of its flattened map)."""
    incoming, outgoing = net.weight_layers()[l], net.weight_layers()[l + 1]
    mask = torch.zeros_like(outgoing.weight, dtype=torch.bool)
    units = [int(u) for u in units]
    if outgoing.weight.dim() == 4 or incoming.weight.dim() == 2:
        mask[:, units] = True
    else:  # conv -> linear: flatten of [channels, H, W]
        channels = incoming.weight.shape[0]
        positions = outgoing.weight.shape[1] // channels
        side = int(math.isqrt(positions))
        indicator = torch.zeros(channels, side, side, dtype=torch.bool)
        indicator[units] = True
        mask[:, indicator.flatten()] = True
    return mask


# ===================================================================================================== Backprop


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_backprop_sgd_is_one_manual_sgd_step_and_returns_output_before_update(kind):
    net = small_mlp(seed=1) if kind == "mlp" else ConvNet(seed=1)
    x, y = batches(2, 1, batch=4, conv=kind == "convnet", n_classes=OUT if kind == "mlp" else 2)[0]
    before = copy.deepcopy(net)
    lr = 0.05
    learner = Backprop(net, step_size=lr, optimizer="sgd")
    loss, out = learner.learn(x, y)

    out_before = before(x)
    loss_before = F.cross_entropy(out_before, y)
    grads = torch.autograd.grad(loss_before, list(before.parameters()))
    torch.testing.assert_close(out, out_before.detach(), rtol=0, atol=0)
    assert loss.item() == pytest.approx(loss_before.item(), rel=1e-6)
    assert not out.requires_grad and not loss.requires_grad
    for p, w, g in zip(net.parameters(), before.parameters(), grads):
        torch.testing.assert_close(p.detach(), (w - lr * g).detach(), rtol=1e-6, atol=1e-8)
    # the parameters moved, so the output after the update is different
    assert any(g.abs().sum() > 0 for g in grads)
    assert not torch.equal(net(x).detach(), out)


def test_backprop_sgd_momentum_weight_decay_matches_manual():
    net = small_mlp(seed=3)
    manual = copy.deepcopy(net)
    lr, mu, wd = 0.05, 0.9, 0.01
    learner = Backprop(net, step_size=lr, momentum=mu, weight_decay=wd)
    buffers = None
    for x, y in batches(4, 4):
        learner.learn(x, y)
        grads = torch.autograd.grad(F.cross_entropy(manual(x), y), list(manual.parameters()))
        with torch.no_grad():
            d = [g + wd * w for g, w in zip(grads, manual.parameters())]
            buffers = d if buffers is None else [mu * b + di for b, di in zip(buffers, d)]
            for w, b in zip(manual.parameters(), buffers):
                w.sub_(lr * b)
    for p, q in zip(net.parameters(), manual.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_backprop_adam_matches_manual():
    net = small_mlp(seed=5)
    manual = copy.deepcopy(net)
    lr, (b1, b2), wd, eps = 0.01, (0.9, 0.99), 0.001, 1e-8
    learner = Backprop(net, step_size=lr, optimizer="adam", betas=(b1, b2), weight_decay=wd)
    m = v = None
    for t, (x, y) in enumerate(batches(6, 4), start=1):
        learner.learn(x, y)
        grads = torch.autograd.grad(F.cross_entropy(manual(x), y), list(manual.parameters()))
        with torch.no_grad():
            g = [gi + wd * w for gi, w in zip(grads, manual.parameters())]
            m = [(1 - b1) * gi for gi in g] if m is None else [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
            v = [(1 - b2) * gi ** 2 for gi in g] if v is None else [b2 * vi + (1 - b2) * gi ** 2
                                                                     for vi, gi in zip(v, g)]
            for w, mi, vi in zip(manual.parameters(), m, v):
                w.sub_(lr * (mi / (1 - b1 ** t)) / ((vi / (1 - b2 ** t)).sqrt() + eps))
    for p, q in zip(net.parameters(), manual.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


# ===================================================================================================== invalid


@pytest.mark.parametrize("make", [
    lambda n: Backprop(n, step_size=-0.1),
    lambda n: Backprop(n, step_size=0.0),
    lambda n: Backprop(n, optimizer="rmsprop"),
    lambda n: Backprop(n, momentum=1.0),
    lambda n: Backprop(n, weight_decay=-1e-4),
    lambda n: ShrinkAndPerturb(n, noise_std=-1e-5),
    lambda n: ShrinkAndPerturb(n, step_size=-1.0),
    lambda n: ContinualBackprop(n, replacement_rate=1.5),
    lambda n: ContinualBackprop(n, replacement_rate=-0.1),
    lambda n: ContinualBackprop(n, utility="magnitude"),
    lambda n: ContinualBackprop(n, maturity_threshold=-1),
    lambda n: ContinualBackprop(n, decay_rate=1.0),
    lambda n: ContinualBackprop(n, step_size=-0.01),
    lambda n: ContinualBackprop(n, optimizer="adamw"),
], ids=["bp-neg-step", "bp-zero-step", "bp-optimizer", "bp-momentum", "bp-wd", "snp-noise", "snp-step",
        "cbp-rate-high", "cbp-rate-neg", "cbp-utility", "cbp-maturity", "cbp-decay", "cbp-step", "cbp-optimizer"])
def test_invalid_parameters(make):
    with pytest.raises(ValueError):
        make(small_mlp())


# ===================================================================================================== Shrink and Perturb


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_shrink_and_perturb_without_noise_is_backprop_with_weight_decay(optimizer):
    wd = 1e-3
    bp_net, snp_net = small_mlp(seed=7), small_mlp(seed=7)
    bp = Backprop(bp_net, step_size=0.02, optimizer=optimizer, weight_decay=wd, seed=1)
    snp = ShrinkAndPerturb(snp_net, step_size=0.02, optimizer=optimizer, weight_decay=wd, noise_std=0.0, seed=1)
    for x, y in batches(8, 5):
        _, out_bp = bp.learn(x, y)
        _, out_snp = snp.learn(x, y)
        assert torch.equal(out_bp, out_snp)
    assert_params_equal(params(bp_net), params(snp_net))
    # and weight decay really acts: backprop without it ends elsewhere
    plain_net = small_mlp(seed=7)
    plain = Backprop(plain_net, step_size=0.02, optimizer=optimizer, seed=1)
    for x, y in batches(8, 5):
        plain.learn(x, y)
    assert not torch.equal(plain_net.hidden[0].weight, bp_net.hidden[0].weight)


@pytest.mark.parametrize("noise_std", [1e-2, 1e-3])
def test_shrink_and_perturb_noise_scale(noise_std):
    bp_net = MLP(in_features=IN, width=64, depth=2, out_features=OUT, seed=9)
    snp_net = copy.deepcopy(bp_net)
    bp = Backprop(bp_net, step_size=0.01, weight_decay=1e-4)
    snp = ShrinkAndPerturb(snp_net, step_size=0.01, weight_decay=1e-4, noise_std=noise_std, seed=3)
    x, y = batches(10, 1)[0]
    bp.learn(x, y)
    snp.learn(x, y)
    diffs = [(p - q).detach().double().flatten() for p, q in zip(snp_net.parameters(), bp_net.parameters())]
    # every weight and every bias is perturbed
    assert all(torch.count_nonzero(d) == d.numel() for d in diffs)
    d = torch.cat(diffs)  # about 5,800 samples of N(0, noise_std^2)
    assert d.std().item() == pytest.approx(noise_std, rel=0.05)
    assert abs(d.mean().item()) < 5 * noise_std / math.sqrt(d.numel())


def test_shrink_and_perturb_noise_is_seeded():
    nets = [small_mlp(seed=1) for _ in range(3)]
    learners = [ShrinkAndPerturb(n, noise_std=1e-3, seed=s) for n, s in zip(nets, [4, 4, 5])]
    for x, y in batches(0, 3):
        for learner in learners:
            learner.learn(x, y)
    assert_params_equal(params(nets[0]), params(nets[1]))
    assert not torch.equal(nets[0].hidden[0].weight, nets[2].hidden[0].weight)


# ===================================================================================================== CBP == BP at rate 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("kind,dropout", [("mlp", 0.0), ("mlp", 0.3), ("convnet", 0.0), ("convnet", 0.3)])
def test_continual_backprop_with_zero_rate_is_backprop(kind, dropout, optimizer):
    conv = kind == "convnet"

    def make():
        return ConvNet(dropout=dropout, seed=2) if conv else small_mlp(seed=2, width=12, depth=3, dropout=dropout)

    bp_net, cbp_net = make(), make()
    kwargs = dict(step_size=0.01, optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0.0, seed=11)
    bp = Backprop(bp_net, **kwargs)
    cbp = ContinualBackprop(cbp_net, replacement_rate=0.0, maturity_threshold=0, **kwargs)
    for x, y in batches(3, 3 if conv else 8, batch=4, conv=conv, n_classes=2 if conv else OUT):
        loss_bp, out_bp = bp.learn(x, y)
        loss_cbp, out_cbp = cbp.learn(x, y)
        assert torch.equal(out_bp, out_cbp)
        assert torch.equal(loss_bp, loss_cbp)
    assert_params_equal(params(bp_net), params(cbp_net))
    assert cbp.replacements == [0] * len(cbp_net.hidden_sizes)
    assert not torch.equal(params(bp_net)[0], params(make())[0])  # training did happen


# ===================================================================================================== replacement counts


def simulate_replacements(width, maturity, rate, steps):
    """Independent simulation of one layer's accumulator and maturity window: (total replaced, sorted ages of the
    immature units, replaced per step). Which eligible units are replaced does not change how many units are
    eligible later, nor the ages of the immature ones."""
    ages = [0] * width
    accumulated, total, per_step = 0.0, 0, []
    for _ in range(steps):
        ages = [a + 1 for a in ages]
        eligible = [i for i, a in enumerate(ages) if a > maturity]
        accumulated += rate * len(eligible)
        k = int(accumulated)
        accumulated -= k
        for i in eligible[:k]:  # which eligible units does not matter for the counts
            ages[i] = 0
        total += k
        per_step.append(k)
    return total, sorted(a for a in ages if a <= maturity), per_step


def test_simulation_by_hand():
    """The simulation agrees with a hand count: width 20, m = 5, rate 0.1."""
    total, _, per_step = simulate_replacements(20, 5, 0.1, 14)
    # Units replaced at step s are mature again at step s + 6 (age > 5).
    # steps 1-5: no unit is mature.            step 6: 20 eligible, acc 2.0 -> 2 replaced (acc 0)
    # step 7: 18 eligible, acc 1.8 -> 1 (0.8)   step 8: 17 eligible, acc 2.5 -> 2 (0.5)
    # step 9: 15 eligible, acc 2.0 -> 2 (0)     step 10: 13 eligible, acc 1.3 -> 1 (0.3)
    # step 11: 12 eligible, acc 1.5 -> 1 (0.5)  step 12: 11 + the 2 of step 6 = 13, acc 1.8 -> 1 (0.8)
    # step 13: 12 + the 1 of step 7 = 13, acc 2.1 -> 2 (0.1)
    # step 14: 11 + the 2 of step 8 = 13, acc 1.4 -> 1 (0.4)
    assert per_step == [0, 0, 0, 0, 0, 2, 1, 2, 2, 1, 1, 1, 2, 1]
    assert total == sum(per_step)


@pytest.mark.parametrize("width,maturity,rate,steps", [
    (20, 5, 0.1, 30), (20, 0, 0.25, 12), (13, 3, 0.05, 40), (10, 2, 1.0, 9), (16, 4, 0.3, 20)])
def test_continual_backprop_replacement_counts_mlp(width, maturity, rate, steps):
    net = small_mlp(seed=4, width=width, depth=2)
    learner = ContinualBackprop(net, step_size=0.01, replacement_rate=rate, maturity_threshold=maturity, seed=0)
    data = batches(5, steps, batch=3)
    for x, y in data[:maturity]:
        learner.learn(x, y)
    assert learner.replacements == [0, 0]  # nothing is mature during the first m steps
    for x, y in data[maturity:]:
        learner.learn(x, y)
    total, ages, _ = simulate_replacements(width, maturity, rate, steps)
    assert total > 0
    assert learner.replacements == [total, total]
    for l in range(2):
        assert sorted(a for a in learner.age[l].tolist() if a <= maturity) == ages


def test_continual_backprop_replacement_counts_convnet():
    net = ConvNet(seed=0)
    rate, maturity, steps = 0.05, 1, 4
    learner = ContinualBackprop(net, step_size=0.01, replacement_rate=rate, maturity_threshold=maturity, seed=0)
    for x, y in batches(1, steps, batch=2, conv=True, n_classes=2):
        learner.learn(x, y)
    expected = [simulate_replacements(n, maturity, rate, steps) for n in [32, 64, 128, 128, 128]]
    assert learner.replacements == [e[0] for e in expected]
    assert [sorted(a for a in age.tolist() if a <= maturity) for age in learner.age] == [e[1] for e in expected]
    assert learner.replacements[0] < learner.replacements[2]


# ===================================================================================================== reinitialisation


def snapshot(learner):
    return dict(params=params(learner.net),
                utility=[u.clone() for u in learner.utility],
                bias_corrected=[learner.bias_corrected_utility(l).clone()
                                for l in range(len(learner.utility))],
                age=[a.clone() for a in learner.age],
                mean_activation=[m.clone() for m in learner.mean_activation])


def capture_replacements(learner):
    """Record the learner's state right before and right after every replacement (the
    method's ``replace``, called by ``after_step`` with the units it chose)."""
    records = []
    replace = learner.method.replace

    def recording(l, runs, counts, units):
        before = snapshot(learner)
        replace(l, runs, counts, units)
        records.append((l, units.clone(), before, snapshot(learner)))

    learner.method.replace = recording
    return records


def _param_index(net, tensor):
    return [i for i, p in enumerate(net.parameters()) if p is tensor][0]


@pytest.mark.parametrize("kind,optimizer,utility", [("mlp", "sgd", "contribution"), ("mlp", "adam", "adaptable"),
                                                    ("convnet", "sgd", "contribution"),
                                                    ("convnet", "adam", "adaptable")])
def test_reinitialised_units(kind, optimizer, utility):
    conv = kind == "convnet"
    net = ConvNet(seed=6) if conv else small_mlp(seed=6, width=10, depth=3)
    maturity = 2
    learner = ContinualBackprop(net, step_size=0.01, optimizer=optimizer,
                                replacement_rate=0.1 if conv else 0.2, maturity_threshold=maturity,
                                utility=utility, seed=3)
    records = capture_replacements(learner)
    for x, y in batches(7, 5 if conv else 8, batch=3, conv=conv, n_classes=2 if conv else OUT):
        learner.learn(x, y)
    assert records
    layers = net.weight_layers()
    for l, units, before, after in records:
        units_list = units.tolist()
        assert len(set(units_list)) == len(units_list)
        n = net.hidden_sizes[l]
        others = [u for u in range(n) if u not in units_list]
        # the chosen units: eligible, and the lowest bias-corrected utility among the eligible (ties by index)
        age, score = before["age"][l], before["bias_corrected"][l]
        assert all(age[u] > maturity for u in units_list)
        candidates = sorted((float(score[u]), u) for u in range(n) if age[u] > maturity)
        assert units_list == [u for _, u in candidates[:len(units_list)]]

        i_w, i_b = _param_index(net, layers[l].weight), _param_index(net, layers[l].bias)
        i_out = _param_index(net, layers[l + 1].weight)
        bound = math.sqrt(6.0 / layers[l].weight[0].numel())
        w_new, w_old = after["params"][i_w], before["params"][i_w]
        # fresh incoming weights within the Kaiming bound, different from the old ones; zero bias
        assert (w_new[units].abs() <= bound).all()
        for u in units_list:
            assert not torch.equal(w_new[u], w_old[u])
            assert (w_new[u] != w_old[u]).float().mean() > 0.9
        assert torch.count_nonzero(after["params"][i_b][units]) == 0
        # zero outgoing weights, exactly the ones these units feed
        mask = outgoing_mask(net, l, units_list)
        out_new, out_old = after["params"][i_out], before["params"][i_out]
        assert torch.count_nonzero(out_new[mask]) == 0
        assert torch.equal(out_new[~mask], out_old[~mask])
        # the other units and every other parameter are untouched
        assert torch.equal(w_new[others], w_old[others])
        assert torch.equal(after["params"][i_b][others], before["params"][i_b][others])
        for i, (p_new, p_old) in enumerate(zip(after["params"], before["params"])):
            if i not in (i_w, i_b, i_out):
                assert torch.equal(p_new, p_old)
        # age, utility (and running mean) reset for the new units only
        for key in ("age", "utility", "mean_activation"):
            assert torch.count_nonzero(after[key][l][units]) == 0
            assert torch.equal(after[key][l][others], before[key][l][others])
            for k in range(len(after[key])):
                if k != l:
                    assert torch.equal(after[key][k], before[key][k])
    total = [0] * len(net.hidden_sizes)
    for l, units, _, _ in records:
        total[l] += len(units)
    assert total == learner.replacements


def test_replacement_uses_bias_corrected_utility():
    """A young unit's running average is small only because it started at zero: the choice divides it by
    1 - decay^age. Here the raw utilities rank unit 1 lowest, the bias-corrected ones rank unit 0 lowest."""
    net = small_mlp(seed=3, width=4, depth=1)
    learner = ContinualBackprop(net, step_size=0.01, replacement_rate=0.25, maturity_threshold=0, decay_rate=0.99,
                                seed=0)
    learner.method.birth[0][0] = torch.tensor([-1000, -1, -1000, -1000])   # ages 1000, 1, 1000, 1000
    learner.utility[0][:] = torch.tensor([0.5, 0.05, 10.0, 10.0])
    x, y = batches(0, 1, batch=2)[0]
    learner.learn(x, y)  # 4 eligible x 0.25 = 1 replacement
    assert learner.replacements == [1]
    assert learner.age[0].tolist() == [0, 2, 1001, 1001]


def _trained_learner(kind, optimizer="sgd", steps=4, norm=None):
    conv = kind == "convnet"
    net = ConvNet(seed=8, norm=norm) if conv else small_mlp(seed=8, width=10, depth=2, norm=norm)
    learner = ContinualBackprop(net, step_size=0.05, optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0,
                                replacement_rate=0.0, seed=2)
    data = batches(9, steps + 1, batch=4, conv=conv, n_classes=2 if conv else OUT)
    for x, y in data[:steps]:
        learner.learn(x, y)
    return learner, data[steps][0]


@pytest.mark.parametrize("kind,l,norm", [("mlp", 0, None), ("mlp", 1, None), ("mlp", 0, "batch"),
                                         ("convnet", 0, None), ("convnet", 2, None), ("convnet", 3, None),
                                         ("convnet", 2, "batch"),
                                         pytest.param("mlp", 0, "layer", marks=pytest.mark.xfail(
                                             strict=True, reason="layer norm mixes the units of a layer: new "
                                             "incoming weights change every unit's normalised activation"))])
def test_new_units_do_not_change_the_output(kind, l, norm):
    """Reinitialising units gives the output of the network with those units removed (outgoing weights zeroed):
    the new incoming weights have no effect on the output."""
    learner, x = _trained_learner(kind, norm=norm)
    net = learner.net
    net.eval()
    units = torch.tensor([1, 4, 6])
    removed = copy.deepcopy(net)
    with torch.no_grad():
        removed.weight_layers()[l + 1].weight[outgoing_mask(net, l, units)] = 0.0
        expected = removed(x)
        assert not torch.allclose(expected, net(x))  # removing active units does change the output
        learner.reinitialise(l, units)
        torch.testing.assert_close(net(x), expected)
    assert not torch.equal(net.weight_layers()[l].weight, removed.weight_layers()[l].weight)


@pytest.mark.parametrize("kind,l", [("mlp", 0), ("mlp", 1), ("convnet", 1), ("convnet", 2), ("convnet", 4)])
def test_replacing_dead_units_leaves_the_output_unchanged(kind, l):
    learner, x = _trained_learner(kind)
    net = learner.net
    units = torch.tensor([0, 3, 5])
    with torch.no_grad():
        net.weight_layers()[l].bias[units] = -1e4  # these units output 0 on every input in [0, 1]
        _, hidden = net(x, return_hidden=True)
        assert torch.count_nonzero(hidden[l][:, units]) == 0
        before = net(x)
        learner.reinitialise(l, units)
        torch.testing.assert_close(net(x), before)
        _, hidden = net(x, return_hidden=True)
    assert torch.count_nonzero(hidden[l][:, units]) > 0  # the new units are alive (bias 0)


def test_reinitialise_can_be_called_outside_no_grad():
    """``reinitialise`` is a public method: calling it directly (not from ``learn``) must work.

    It writes into leaf parameters that require grad, so it needs ``torch.no_grad()`` inside it."""
    net = small_mlp(seed=0)
    learner = ContinualBackprop(net, replacement_rate=0.0, seed=1)
    learner.reinitialise(0, torch.tensor([1, 2]))
    assert torch.count_nonzero(net.hidden[1].weight[:, [1, 2]]) == 0
    assert learner.replacements == [2, 0]


@pytest.mark.parametrize("kind,l", [("mlp", 1), ("convnet", 1), ("convnet", 3)])
def test_reinitialise_resets_batch_norm_of_the_units(kind, l):
    learner, _ = _trained_learner(kind, optimizer="adam", norm="batch")
    norm = learner.net.norms[l]
    with torch.no_grad():  # make every entry distinguishable from its reset value
        norm.weight.uniform_(1.5, 2.0, generator=make_generator(0))
        norm.bias.uniform_(0.5, 1.0, generator=make_generator(1))
    before = {k: getattr(norm, k).detach().clone() for k in ("weight", "bias", "running_mean", "running_var")}
    state = {k: learner.optimizer.state[norm.weight][k].clone() for k in ("exp_avg", "exp_avg_sq")}
    assert all(torch.count_nonzero(v) > 0 for v in state.values())
    units = torch.tensor([2, 9])
    others = [u for u in range(norm.weight.shape[0]) if u not in (2, 9)]
    with torch.no_grad():
        learner.reinitialise(l, units)
    resets = dict(weight=1.0, bias=0.0, running_mean=0.0, running_var=1.0)
    for k, value in resets.items():
        assert (getattr(norm, k)[units] == value).all()
        assert torch.equal(getattr(norm, k)[others], before[k][others])
    for k, v in state.items():
        assert torch.count_nonzero(learner.optimizer.state[norm.weight][k][units]) == 0
        assert torch.equal(learner.optimizer.state[norm.weight][k][others], v[others])


def test_conv_unit_replacement_zeroes_its_four_fc1_columns():
    learner, _ = _trained_learner("convnet")
    fc1 = learner.net.fcs[0].weight
    before = fc1.detach().clone()
    assert torch.count_nonzero(before) == before.numel()
    with torch.no_grad():
        learner.reinitialise(2, torch.tensor([0, 5, 127]))
    zero_columns = [0, 1, 2, 3, 20, 21, 22, 23, 508, 509, 510, 511]  # 4c .. 4c + 3 for c = 0, 5, 127
    assert torch.count_nonzero(fc1[:, zero_columns]) == 0
    kept = [c for c in range(512) if c not in zero_columns]
    assert torch.equal(fc1[:, kept], before[:, kept])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("kind,l", [("mlp", 0), ("mlp", 1), ("convnet", 0), ("convnet", 2), ("convnet", 3)])
def test_reinitialise_resets_optimizer_state(kind, l, optimizer):
    learner, _ = _trained_learner(kind, optimizer=optimizer)
    net = learner.net
    incoming, outgoing = net.weight_layers()[l], net.weight_layers()[l + 1]
    keys = ["exp_avg", "exp_avg_sq"] if optimizer == "adam" else ["momentum_buffer"]
    state = learner.optimizer.state
    # units whose state is non-zero before, so that zeroing is visible
    active = (state[incoming.bias][keys[0]] != 0).nonzero().flatten()
    assert len(active) >= 3
    units = active[:3]
    mask = outgoing_mask(net, l, units)
    assert all(torch.count_nonzero(state[outgoing.weight][k][mask]) > 0 for k in keys)
    before = {(name, k): state[p][k].clone() for name, p in [("w", incoming.weight), ("b", incoming.bias),
                                                              ("out", outgoing.weight)] for k in keys}
    others = [u for u in range(incoming.weight.shape[0]) if u not in units.tolist()]
    with torch.no_grad():
        learner.reinitialise(l, units)
    for k in keys:
        for name, p in [("w", incoming.weight), ("b", incoming.bias)]:
            assert torch.count_nonzero(state[p][k][units]) == 0
            assert torch.equal(state[p][k][others], before[(name, k)][others])
        assert torch.count_nonzero(state[outgoing.weight][k][mask]) == 0
        assert torch.equal(state[outgoing.weight][k][~mask], before[("out", k)][~mask])
        assert torch.count_nonzero(state[outgoing.weight][k][~mask]) > 0


# ===================================================================================================== lowest utility


def test_lowest_utility_known_answer():
    utility = torch.tensor([0.5, 0.1, 0.3, 0.1, 0.0, 0.2, -1.0])
    eligible = torch.tensor([True, True, True, True, False, True, False])
    assert lowest_utility(utility, eligible, 3).tolist() == [1, 3, 5]
    assert lowest_utility(utility, eligible, 1).tolist() == [1]
    assert lowest_utility(utility, eligible, 5).tolist() == [1, 3, 5, 2, 0]
    assert lowest_utility(utility, eligible, 0).tolist() == []


def test_lowest_utility_stacked_runs():
    utility = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 0.0, 5.0, 0.0]])
    eligible = torch.tensor([[True, True, True, False], [False, True, True, True]])
    assert lowest_utility(utility, eligible, 2).tolist() == [[1, 2], [1, 3]]


@pytest.mark.parametrize("seed", range(5))
def test_lowest_utility_random_with_ties(seed):
    g = make_generator(seed)
    runs, n = 4, 30
    utility = torch.randint(0, 5, (runs, n), generator=g).float()  # many ties
    eligible = torch.rand(runs, n, generator=g) < 0.6
    k = int(eligible.sum(dim=1).min())
    chosen = lowest_utility(utility, eligible, k)
    assert chosen.shape == (runs, k)
    for r in range(runs):
        expected = sorted((float(utility[r, u]), u) for u in range(n) if eligible[r, u])[:k]
        assert chosen[r].tolist() == [u for _, u in expected]
        assert eligible[r, chosen[r]].all()
        one = lowest_utility(utility[r], eligible[r], k)
        assert one.tolist() == chosen[r].tolist()


# ===================================================================================================== utility


def _contribution_mlp(h, next_weight):
    return h.abs().mean(dim=0) * next_weight.abs().sum(dim=0)


@pytest.mark.parametrize("decay", [0.99, 0.5])
def test_contribution_utility_mlp(decay):
    net = small_mlp(seed=12, width=8, depth=2)
    learner = ContinualBackprop(net, step_size=0.1, replacement_rate=0.0, decay_rate=decay, seed=0)
    expected = [torch.zeros(8), torch.zeros(8)]
    for step, (x, y) in enumerate(batches(13, 3), start=1):
        with torch.no_grad():
            _, hidden = copy.deepcopy(net)(x, return_hidden=True)
        learner.learn(x, y)
        # running average of |h| (mean over the batch) x sum of |outgoing weights| after this step's update
        nexts = [net.hidden[1].weight, net.output.weight]
        for l in range(2):
            c = _contribution_mlp(hidden[l], nexts[l].detach())
            expected[l] = decay * expected[l] + (1 - decay) * c
            torch.testing.assert_close(learner.utility[l], expected[l], rtol=1e-5, atol=1e-7)
            if step == 1:
                torch.testing.assert_close(learner.bias_corrected_utility(l), c, rtol=1e-5, atol=1e-7)
            assert (learner.age[l] == step).all()
    assert all(u.abs().sum() > 0 for u in learner.utility)


def test_contribution_utility_convnet():
    net = ConvNet(seed=13)
    decay = 0.9
    learner = ContinualBackprop(net, step_size=0.05, replacement_rate=0.0, decay_rate=decay, seed=0)
    x, y = batches(14, 1, batch=3, conv=True, n_classes=2)[0]
    with torch.no_grad():
        _, hidden = copy.deepcopy(net)(x, return_hidden=True)
    learner.learn(x, y)
    w = [layer.weight.detach().abs() for layer in net.weight_layers()]
    # outgoing weight sums per unit: conv kernels (outputs, kernel positions); fc1's 4 columns per channel
    group = torch.zeros(512, 128)
    group[torch.arange(512), torch.arange(512) // 4] = 1.0
    out_sums = [w[1].sum(dim=(0, 2, 3)), w[2].sum(dim=(0, 2, 3)), w[3].sum(dim=0) @ group, w[4].sum(dim=0),
                w[5].sum(dim=0)]
    for l, h in enumerate(hidden):
        mean_abs = h.abs().mean(dim=0) if h.dim() == 2 else h.abs().mean(dim=(0, 2, 3))
        torch.testing.assert_close(learner.utility[l], (1 - decay) * mean_abs * out_sums[l], rtol=1e-5, atol=1e-8)


def test_adaptable_utility_mlp_first_step():
    net = small_mlp(seed=15, width=8, depth=2)
    decay = 0.9
    learner = ContinualBackprop(net, step_size=0.1, replacement_rate=0.0, decay_rate=decay, utility="adaptable")
    x, y = batches(16, 1)[0]
    with torch.no_grad():
        _, hidden = copy.deepcopy(net)(x, return_hidden=True)
    learner.learn(x, y)
    layers = [l.weight.detach().abs() for l in net.weight_layers()]
    for l, h in enumerate(hidden):
        # after one step the bias-corrected running mean is the batch mean itself
        deviation = (h - h.mean(dim=0)).abs().mean(dim=0)
        contribution = deviation * layers[l + 1].mean(dim=0) / layers[l].mean(dim=1)
        torch.testing.assert_close(learner.utility[l], (1 - decay) * contribution, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(learner.mean_activation[l], (1 - decay) * h.mean(dim=0), rtol=1e-5, atol=1e-8)


# ===================================================================================================== state dict


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_continual_backprop_state_dict_roundtrip(optimizer):
    def make(net_seed, learner_seed):
        net = small_mlp(seed=net_seed, width=12, depth=2, dropout=0.2)
        return ContinualBackprop(net, step_size=0.02, optimizer=optimizer,
                                 momentum=0.9 if optimizer == "sgd" else 0.0, replacement_rate=0.15,
                                 maturity_threshold=2, seed=learner_seed)

    data = batches(17, 12)
    learner = make(0, 1)
    for x, y in data[:5]:
        learner.learn(x, y)
    saved = _roundtrip(learner.state_dict())
    replaced_at_save = list(learner.replacements)
    assert sum(replaced_at_save) > 0
    outputs = [learner.learn(x, y)[1] for x, y in data[5:]]
    assert sum(learner.replacements) > sum(replaced_at_save)  # replacements happen after the save too

    fresh = make(100, 200)  # different initial weights and generator: everything must come from the state
    fresh.learn(*data[0])   # and some state of its own to overwrite
    fresh.load_state_dict(saved)
    assert fresh.replacements == replaced_at_save
    fresh_outputs = [fresh.learn(x, y)[1] for x, y in data[5:]]
    for a, b in zip(outputs, fresh_outputs):
        assert torch.equal(a, b)
    assert_params_equal(params(learner.net), params(fresh.net))
    assert fresh.replacements == learner.replacements
    for name in ("utility", "age", "mean_activation"):
        for a, b in zip(getattr(learner, name), getattr(fresh, name)):
            assert torch.equal(a, b)
    assert fresh.method.accumulated == pytest.approx(learner.method.accumulated)
    assert torch.equal(fresh.generator.get_state(), learner.generator.get_state())


def test_backprop_state_dict_roundtrip_restores_dropout_generator():
    data = batches(18, 6)
    learner = Backprop(small_mlp(seed=0, dropout=0.5), step_size=0.05, momentum=0.9, seed=3)
    for x, y in data[:3]:
        learner.learn(x, y)
    saved = _roundtrip(learner.state_dict())
    for x, y in data[3:]:
        learner.learn(x, y)
    fresh = Backprop(small_mlp(seed=1, dropout=0.5), step_size=0.05, momentum=0.9, seed=4)
    fresh.load_state_dict(saved)
    for x, y in data[3:]:
        fresh.learn(x, y)
    assert_params_equal(params(learner.net), params(fresh.net))
