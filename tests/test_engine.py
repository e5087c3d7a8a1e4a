"""Tests of lopbook.engine.Lockstep: R runs trained in lockstep give the numbers of the reference learners.

The engine computes the same mathematics as :mod:`lopbook.learners` with batched kernels (``bmm`` instead of
``mm``, a fused SGD update), so the two agree to float32 rounding, not bit for bit: outputs and parameters are
compared with small absolute tolerances, predictions and continual-backprop bookkeeping (which units were
replaced, when) exactly. Checkpoints of the engine itself (``run_state`` / ``load_run_state``) must continue bit
for bit.
"""
import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from lopbook import methods
from lopbook.engine import Lockstep, RunSettings
from lopbook.learners import Learner
from lopbook.metrics import plasticity_metrics
from lopbook.nets import MLP, ConvNet, kaiming_bound
from lopbook.runtime import make_generator

IN, OUT, WIDTH, DEPTH = 20, 5, 24, 2
ATOL = 1e-4                 # float32 rounding of batched vs. one-by-one kernels, after a few hundred steps

#: hyperparameters that make each registered method act visibly within a short test (a method added
#: to the registry must be added here, with settings that exercise it)
EXERCISE = {
    "backprop": {},
    "l2": dict(weight_decay=1e-3),
    "shrink_and_perturb": dict(weight_decay=1e-3, noise_std=1e-3),
    "continual_backprop": dict(replacement_rate=0.03, maturity_threshold=20),
    "l2_init": dict(weight_decay=1e-2),
    "redo": dict(threshold=0.5, period=25),
    "weight_clipping": dict(kappa=1.0),
    "upgd": dict(beta_utility=0.999, noise_std=0.1, weight_decay=0.01),
    "normalize_and_project": {},          # layer norm nets only (its supports())
    "spectral_regularization": dict(strength=1e-3),
    "self_normalized_resets": dict(percentile=0.9, initial_threshold=10, min_threshold=5, max_threshold=50,
                                   update_period=50),
}


# ----------------------------------------------------------------------------------------------- helpers
def RS(seed, step_size, momentum=0.0, method="backprop", **hp):
    """Run settings with a method and its hyperparameters."""
    return RunSettings(seed=seed, step_size=step_size, momentum=momentum, method=method,
                       hyperparameters=methods.settings(method, **hp))


def CBP(seed, step_size, momentum=0.0, **hp):
    return RS(seed, step_size, momentum, "continual_backprop", **hp)


def make_mlp(seed, dropout=0.0, norm=None, width=WIDTH):
    return MLP(IN, width, DEPTH, OUT, dropout=dropout, norm=norm, seed=seed)


def make_conv(seed, dropout=0.0):
    return ConvNet(3, 2, dropout=dropout, seed=seed)


def reference_learner(net, run, optimizer="sgd"):
    """The reference learner (autograd and torch.optim, one network) doing what ``run`` asks."""
    hp = dataclasses.asdict(run.resolved())
    momentum = dict(momentum=run.momentum) if optimizer == "sgd" else {}
    return Learner(net, run.step_size, method=run.method, optimizer=optimizer, seed=run.seed,
                   **momentum, **hp)


def stream(seed, steps, R, batch, conv=False, device="cpu"):
    """Per-run data: ``x`` ``[R, batch, ...]`` and labels ``[R, batch]``, a different batch for every run."""
    g = make_generator(seed)
    shape = (R, batch, 3, 32, 32) if conv else (R, batch, IN)
    n_classes = 2 if conv else OUT
    for _ in range(steps):
        yield torch.rand(shape, generator=g).to(device), torch.randint(0, n_classes, (R, batch), generator=g).to(device)


def train_both(make_net, runs, steps, batch=1, conv=False, optimizer="sgd", data_seed=0, atol=ATOL, device="cpu",
               grouped=None):
    """Train ``runs`` in one Lockstep and one by one with reference learners (both on ``device``); compare every
    step's outputs. ``grouped``: the engine's ``grouped_convolutions`` (None: the device's default)."""
    R = len(runs)
    engine = Lockstep([make_net(r) for r in range(R)], runs, optimizer=optimizer, device=torch.device(device),
                      grouped_convolutions=grouped)
    if grouped is not None:
        assert engine.grouped is grouped
    refs = [reference_learner(make_net(r).to(device), run, optimizer) for r, run in enumerate(runs)]
    worst = 0.0
    for x, y in stream(data_seed, steps, R, batch, conv, device):
        out = engine.learn(x, y)
        assert out.shape == (R, batch, 2 if conv else OUT)
        for r, learner in enumerate(refs):
            _, ref_out = learner.learn(x[r], y[r])
            worst = max(worst, float((out[r] - ref_out).abs().max()))
            # same predictions at every step (the online accuracy of the experiments is made of these)
            assert torch.equal(out[r].argmax(-1), ref_out.argmax(-1))
    assert worst <= atol, f"outputs drifted apart by {worst}"
    return engine, refs


def assert_same_params(engine, refs, atol=ATOL):
    for r, learner in enumerate(refs):
        ref_params = list(learner.net.parameters())
        mine = [p[int(engine._position[r])] for p in engine.params]
        assert len(ref_params) == len(mine)
        for a, b in zip(mine, ref_params):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b.detach(), rtol=0, atol=atol)


def cbp_state(engine, r):
    """Run ``r``'s continual-backprop state in the engine (None for another method)."""
    method, j = engine.method_of(r)
    if method.name != "continual_backprop":
        return None
    return dict(birth=[b[j] for b in method.birth], utility=[u[j] for u in method.utility],
                mean_activation=[m[j] for m in method.mean_activation],
                replacements=method.replacements[j].tolist(), utility_type=method.hp.utility)


def assert_same_cbp_state(engine, refs):
    """Same units replaced at the same steps: equal counts, equal ages, close utilities."""
    for r, learner in enumerate(refs):
        mine = cbp_state(engine, r)
        if mine is None:
            assert engine.replacements[r].sum() == 0
            continue
        theirs = learner.method
        assert mine["replacements"] == theirs.replacements[0].tolist()
        for l in range(len(engine.widths)):
            assert torch.equal(engine.step - mine["birth"][l], theirs.age(l)[0])
            torch.testing.assert_close(mine["utility"][l], theirs.utility[l][0], rtol=1e-4, atol=1e-6)
            if mine["utility_type"] == "adaptable":
                torch.testing.assert_close(mine["mean_activation"][l], theirs.mean_activation[l][0],
                                           rtol=1e-4, atol=1e-6)


def assert_same_metrics(engine, refs, probe):
    """``engine.metrics`` equals ``plasticity_metrics`` of the reference network, run by run."""
    mine = engine.metrics(probe)
    assert len(mine) == len(refs)
    for r, (m, learner) in enumerate(zip(mine, refs)):
        theirs = plasticity_metrics(learner.net, probe[r])
        assert m.dead_percent == theirs.dead_percent
        assert m.dead_percent_total == theirs.dead_percent_total
        assert m.effective_rank == pytest.approx(theirs.effective_rank, rel=1e-4)
        assert m.effective_rank_percent == pytest.approx(theirs.effective_rank_percent, rel=1e-4)
        assert m.weight_magnitude == pytest.approx(theirs.weight_magnitude, rel=1e-4)
        assert m.weight_magnitude_total == pytest.approx(theirs.weight_magnitude_total, rel=1e-4)


def probe_batch(R, n=60, conv=False, seed=99):
    g = make_generator(seed)
    return torch.rand((R, n, 3, 32, 32) if conv else (R, n, IN), generator=g)


# ----------------------------------------------------------------------------------------------- every method
def test_every_registered_method_is_exercised_here():
    assert set(EXERCISE) == set(methods.REGISTRY)


@pytest.mark.parametrize("name", sorted(methods.REGISTRY))
@pytest.mark.parametrize("optimizer,kind", [("sgd", "mlp"), ("adam", "mlp"), ("sgd", "mlp-momentum"),
                                            ("sgd", "mlp-layer-norm"), ("sgd", "mlp-dropout")])
def test_every_method_in_lockstep_matches_one_network_at_a_time(name, optimizer, kind):
    """Each registered method, trained in lockstep next to backprop runs (R = 3), gives the numbers of the
    reference learner (autograd, torch.optim, one network at a time), step by step."""
    momentum = 0.5 if kind == "mlp-momentum" else 0.0
    lr = 1e-3 if optimizer == "adam" else 0.02
    runs = [RS(1, lr, momentum), RS(2, lr, momentum, name, **EXERCISE[name]),
            RS(3, lr * 1.5, momentum, name, **EXERCISE[name])]
    norm = "layer" if kind == "mlp-layer-norm" else None
    dropout = 0.2 if kind == "mlp-dropout" else 0.0
    reason = methods.get(name).supports(make_mlp(0, dropout=dropout, norm=norm), optimizer, momentum)
    if reason:                      # a method that refuses this network (its supports() says why)
        pytest.skip(f"{name} cannot train this network: {reason}")
    engine, refs = train_both(lambda s: make_mlp(s, dropout=dropout, norm=norm), runs, steps=200,
                              optimizer=optimizer, data_seed=7)
    fused = optimizer == "sgd" and not momentum and not methods.get(name).needs_gradients
    assert engine.fused_sgd == fused
    assert_same_params(engine, refs)
    assert_same_cbp_state(engine, refs)
    assert_same_metrics(engine, refs, probe_batch(len(runs)))
    # the method did something: its runs differ from plain backprop's from the same start
    plain = Lockstep([make_mlp(s, dropout=dropout, norm=norm) for s in (0, 1)],
                     [RS(1, lr, momentum), RS(2, lr, momentum)], optimizer=optimizer)
    for x, y in stream(7, 200, 3, 1):
        plain.learn(x[:2], y[:2])
    changed = not torch.equal(plain.params[0][1], engine.params[0][int(engine._position[1])])
    assert changed == (name != "backprop")


# ----------------------------------------------------------------------------------------------- MLP, SGD
@pytest.mark.parametrize("utility", ["contribution", "adaptable"])
def test_mlp_sgd_runs_match_reference_learners(utility):
    cbp = dict(maturity_threshold=20, utility=utility)
    runs = [
        RS(11, 0.01),                                                      # plain backprop
        RS(12, 0.03),                                                      # another step size
        RS(13, 0.01, momentum=0.9),                                        # momentum
        RS(14, 0.02, 0.0, "l2", weight_decay=1e-3),                        # L2
        RS(15, 0.02, 0.0, "shrink_and_perturb", weight_decay=1e-3, noise_std=1e-3),
        CBP(16, 0.02, replacement_rate=0.02, **cbp),                       # continual backprop
        CBP(17, 0.01, momentum=0.5, replacement_rate=0.05, **cbp),         # CBP + momentum
    ]
    engine, refs = train_both(make_mlp, runs, steps=300)
    assert engine.step == 300
    assert_same_params(engine, refs)
    # replacements happened, in both implementations, in every layer of the CBP runs
    assert (engine.replacements[5:] > 0).all()
    assert engine.replacements.sum() > 0
    assert_same_cbp_state(engine, refs)
    assert_same_metrics(engine, refs, probe_batch(len(runs)))
    # the runs really differ from each other (one engine does not train R copies of one run)
    assert not torch.allclose(engine.params[0][0], engine.params[0][1])


def test_mlp_sgd_fused_path_matches_reference():
    """No momentum anywhere: the engine takes its fused SGD path (update inside the backward pass)."""
    runs = [RS(1, 0.01), RS(2, 0.03, 0.0, "l2", weight_decay=1e-3),
            RS(3, 0.02, 0.0, "shrink_and_perturb", noise_std=1e-3, weight_decay=1e-4),
            CBP(4, 0.02, replacement_rate=0.03, maturity_threshold=20)]
    engine, refs = train_both(make_mlp, runs, steps=300, data_seed=5)
    assert engine.fused_sgd
    assert_same_params(engine, refs)
    assert engine.replacements[3].sum() > 0
    assert_same_cbp_state(engine, refs)


def test_mlp_minibatches_match_reference():
    runs = [RS(1, 0.03), CBP(2, 0.03, replacement_rate=0.05, maturity_threshold=10, utility="adaptable")]
    engine, refs = train_both(make_mlp, runs, steps=150, batch=7, data_seed=3)
    assert_same_params(engine, refs)
    assert engine.replacements[1].sum() > 0
    assert_same_cbp_state(engine, refs)


def test_mlp_adam_matches_reference():
    runs = [RS(21, 1e-3), RS(22, 3e-3, 0.0, "l2", weight_decay=1e-3),
            RS(23, 1e-3, 0.0, "shrink_and_perturb", weight_decay=0.0, noise_std=1e-4),
            CBP(24, 1e-3, replacement_rate=0.03, maturity_threshold=20)]
    engine, refs = train_both(make_mlp, runs, steps=250, optimizer="adam", data_seed=1)
    assert engine.adam_step == 250
    assert_same_params(engine, refs)
    assert engine.replacements[3].sum() > 0
    assert_same_cbp_state(engine, refs)
    # Adam's moment estimates agree too
    for r, learner in enumerate(refs):
        for i, p in enumerate(learner.net.parameters()):
            state = learner.optimizer.state[p]
            j = int(engine._position[r])
            torch.testing.assert_close(engine.state["exp_avg"][i][j], state["exp_avg"], rtol=1e-3, atol=1e-6)
            torch.testing.assert_close(engine.state["exp_avg_sq"][i][j], state["exp_avg_sq"], rtol=1e-3,
                                       atol=1e-8)
    assert_same_metrics(engine, refs, probe_batch(len(runs)))


@pytest.mark.parametrize("utility", ["contribution", "adaptable"])
def test_mlp_dropout_matches_reference(utility):
    """Dropout masks come from each run's own generator, in the same order as in the learners."""
    runs = [RS(31, 0.01), RS(32, 0.02, 0.0, "shrink_and_perturb", weight_decay=0.0, noise_std=1e-3),
            CBP(33, 0.01, replacement_rate=0.03, maturity_threshold=20, utility=utility)]
    engine, refs = train_both(lambda s: make_mlp(s, dropout=0.2), runs, steps=250, data_seed=2)
    assert engine.dropout == 0.2
    assert_same_params(engine, refs)
    assert engine.replacements[2].sum() > 0
    assert_same_cbp_state(engine, refs)
    assert_same_metrics(engine, refs, probe_batch(len(runs)))     # metrics: no dropout, in both


def test_zero_replacement_rate_run_is_plain_backprop_inside_a_cbp_engine():
    runs = [CBP(41, 0.02, replacement_rate=0.05, maturity_threshold=10),
            CBP(42, 0.02, replacement_rate=0.0, maturity_threshold=10),
            CBP(43, 0.02, 0.5, replacement_rate=0.05, maturity_threshold=10),
            CBP(44, 0.02, 0.5, replacement_rate=0.0, maturity_threshold=10)]
    engine, refs = train_both(make_mlp, runs, steps=250, data_seed=4)
    assert len(engine.methods) == 1                       # the four runs share one instance of the method
    assert engine.replacements[[0, 2]].sum(axis=1).min() > 0
    assert engine.replacements[[1, 3]].sum() == 0
    for r in (1, 3):
        assert all((b == 0).all() for b in cbp_state(engine, r)["birth"])
    assert_same_params(engine, refs)
    assert_same_cbp_state(engine, refs)
    # and bit for bit what plain backprop does with the same seeds
    plain = Lockstep([make_mlp(1), make_mlp(3)], [RS(42, 0.02), RS(44, 0.02, 0.5)])
    for x, y in stream(4, 250, 4, 1):
        plain.learn(x[[1, 3]], y[[1, 3]])
    for p, q in zip(engine.params, plain.params):
        assert torch.equal(p[[1, 3]], q)


# ----------------------------------------------------------------------------------------------- ConvNet
# One ConvNet step on a batch of 8 images has ~10^5 ReLU and max-pool decisions; in float32 the engine's grouped
# convolutions and the reference's plain ones round differently, and every few steps one of those decisions sits
# within rounding of its kink and flips, after which the runs drift apart chaotically. The long comparisons are
# therefore made in float64 (default dtype, so the generators' draws are float64 in both implementations) with
# step sizes, momenta, weight decays and noise levels that are powers of two, so that the engine's float32
# copies of them are exact: the two implementations then agree to float64 rounding. A short float32 check
# follows.
@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


# Both convolution paths of the engine on this machine: separate convolutions per run on channels-last maps (the
# CPU's default) and one grouped convolution (CUDA's default, forced here), each against the reference learners.
conv_paths = pytest.mark.parametrize("grouped", [False, True], ids=["separate", "grouped"])


@conv_paths
def test_convnet_sgd_momentum_cbp_matches_reference(float64, grouped):
    runs = [RS(51, 2 ** -7, 0.875),
            CBP(52, 2 ** -7, 0.875, replacement_rate=0.02, maturity_threshold=3),
            CBP(53, 2 ** -6, 0.875, replacement_rate=0.02, maturity_threshold=3),
            RS(54, 2 ** -6, 0.875, "l2", weight_decay=2 ** -10)]
    engine, refs = train_both(make_conv, runs, steps=15, batch=8, conv=True, data_seed=6, atol=1e-9,
                              grouped=grouped)
    assert engine.conv and engine.params[0].dtype == torch.float64
    assert_same_params(engine, refs, atol=1e-9)
    assert (engine.replacements[1:3] > 0).all()     # every hidden layer (conv and fc) replaced units
    assert_same_cbp_state(engine, refs)
    assert_same_metrics(engine, refs, probe_batch(len(runs), n=16, conv=True))


@conv_paths
def test_convnet_adam_dropout_matches_reference(float64, grouped):
    runs = [RS(61, 2 ** -10),
            CBP(62, 2 ** -10, replacement_rate=0.02, maturity_threshold=3, utility="adaptable"),
            RS(63, 2 ** -10, 0.0, "shrink_and_perturb", noise_std=2 ** -13, weight_decay=2 ** -13)]
    engine, refs = train_both(lambda s: make_conv(s, dropout=0.125), runs, steps=12, batch=8, conv=True,
                              optimizer="adam", data_seed=7, atol=1e-6, grouped=grouped)
    # Adam divides by the root of tiny second moments, which magnifies rounding in parameters that barely learn
    assert_same_params(engine, refs, atol=1e-4)
    assert (engine.replacements[1] > 0).all()
    assert_same_cbp_state(engine, refs)
    assert_same_metrics(engine, refs, probe_batch(len(runs), n=16, conv=True))


@conv_paths
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_convnet_float32_few_steps_match_reference(optimizer, grouped):
    lr, mom = (0.01, 0.9) if optimizer == "sgd" else (1e-3, 0.0)
    runs = [RS(91, lr, mom), CBP(92, lr, mom, replacement_rate=0.05, maturity_threshold=1)]
    engine, refs = train_both(make_conv, runs, steps=4, batch=8, conv=True, optimizer=optimizer,
                              data_seed=8, atol=1e-3, grouped=grouped)
    assert engine.params[0].dtype == torch.float32
    assert_same_params(engine, refs, atol=1e-3)
    assert engine.replacements[1].sum() > 0
    assert_same_cbp_state(engine, refs)


def test_convnet_reset_head_evaluate_and_train_batch():
    nets = [make_conv(s) for s in range(2)]
    engine = Lockstep(nets, [RS(1, 0.01, 0.9)] * 2)
    x, y = next(stream(8, 1, 2, 8, conv=True))
    correct = engine.train_batch(x, y)
    assert correct.shape == (2,) and 0 <= int(correct.min()) and int(correct.max()) <= 8
    engine.reset_head()
    assert engine.params[-1].abs().sum() == 0 and engine.params[-2].abs().sum() == 0
    assert engine.state["momentum_buffer"][-1].abs().sum() == 0
    assert engine.state["momentum_buffer"][-2].abs().sum() == 0
    assert engine.state["momentum_buffer"][0].abs().sum() > 0       # the rest of the network keeps its state
    # a zero head gives equal logits: argmax picks class 0 for every example
    assert engine.evaluate(x, torch.zeros_like(y), batch_size=3).tolist() == [8, 8]


def test_evaluate_matches_reference_networks():
    nets = [make_mlp(s) for s in range(3)]
    engine = Lockstep([make_mlp(s) for s in range(3)], [RS(s, 0.01) for s in range(3)])
    x, y = next(stream(9, 1, 3, 50))
    expected = [int((net(x[r]).argmax(-1) == y[r]).sum()) for r, net in enumerate(nets)]
    assert engine.evaluate(x, y, batch_size=16).tolist() == expected


def test_train_online_counts_the_predictions_made_before_each_update():
    runs = [RS(1, 0.03), CBP(2, 0.01, replacement_rate=0.05, maturity_threshold=5)]
    engine = Lockstep([make_mlp(s) for s in range(2)], runs)
    refs = [reference_learner(make_mlp(s), run) for s, run in enumerate(runs)]
    x, y = next(stream(10, 1, 2, 120))
    correct = engine.train_online(x, y)
    expected = [sum(int(learner.learn(x[r, i:i + 1], y[r, i:i + 1])[1].argmax(-1) == y[r, i])
                    for i in range(x.shape[1])) for r, learner in enumerate(refs)]
    assert correct.tolist() == expected
    assert engine.step == 120
    assert_same_params(engine, refs)


# ----------------------------------------------------------------------------------------------- replaced units
def _outgoing_mask(weight_out_shape, n_units, units):
    """Entries of the next layer's weight ([out, in, ...]) that belong to hidden units ``units`` (a conv channel
    feeding a linear layer owns ``in / n_units`` consecutive columns of the flattened map)."""
    mask = torch.zeros(weight_out_shape, dtype=torch.bool)
    per_unit = weight_out_shape[1] // n_units
    for u in units:
        mask[:, u * per_unit:(u + 1) * per_unit] = True
    return mask


@pytest.mark.parametrize("kind,optimizer", [("mlp", "adam"), ("mlp", "sgd"), ("convnet", "sgd")])
def test_replaced_units_in_engine(kind, optimizer):
    conv = kind == "convnet"
    momentum = 0.0 if optimizer == "adam" else 0.9
    lr = 1e-3 if optimizer == "adam" else 0.01
    runs = [CBP(71, lr, momentum, replacement_rate=0.05, maturity_threshold=3), RS(72, lr, momentum)]
    make = make_conv if conv else make_mlp
    engine = Lockstep([make(s) for s in range(2)], runs, optimizer=optimizer)
    method, _ = engine.method_of(0)
    buffers = engine.state["exp_avg"] if optimizer == "adam" else engine.state["momentum_buffer"]
    checked = set()
    for x, y in stream(11, 12 if conv else 60, 2, 4, conv):
        before = [w.clone() for w in engine.weights]
        replaced_before = engine.replacements.copy()
        engine.learn(x, y)
        assert engine.replacements[1].sum() == 0
        for l, n in enumerate(engine.widths):
            units = torch.nonzero(method.birth[l][0] == engine.step).flatten().tolist()
            assert len(units) == engine.replacements[0, l] - replaced_before[0, l]
            if not units:
                continue
            checked.add(l)
            w_in, b_in, w_out = engine.weights[l][0], engine.biases[l][0], engine.weights[l + 1][0]
            bound = kaiming_bound(make(0).weight_layers()[l])
            assert bound == engine.nets.init_bounds[l]
            assert (w_in[units].abs() <= bound).all()
            assert not torch.equal(w_in[units], before[l][0][units])            # drawn afresh
            assert w_in[units].std() > bound / 4                                 # ... from the whole range
            assert (b_in[units] == 0).all()
            mask = _outgoing_mask(w_out.shape, n, units)
            if l + 1 < len(engine.widths):
                # units of the next layer replaced in the same step got a whole fresh row of incoming weights
                # (including from these new units); their own outgoing weights are zero, so that is harmless
                mask[method.birth[l + 1][0] == engine.step] = False
            assert (w_out[mask] == 0).all()
            assert (w_out[~mask] != 0).any()
            assert method.utility[l][0, units].abs().sum() == 0
            # optimiser state of the reset entries
            for name, state in engine.state.items():
                assert (state[2 * l][0][units] == 0).all(), name
                assert (state[2 * l + 1][0][units] == 0).all(), name
                assert (state[2 * l + 2][0][mask] == 0).all(), name
            assert buffers[2 * l][0].abs().sum() > 0                            # ... and only those
    assert checked == set(range(len(engine.widths)))


def test_new_units_leave_the_output_unchanged():
    """Replacement happens after the update; recomputing with the replaced units' incoming weights scrambled
    gives the same output (their outgoing weights are zero)."""
    engine = Lockstep([make_mlp(0)], [CBP(5, 0.01, replacement_rate=0.2, maturity_threshold=2)])
    method, _ = engine.method_of(0)
    probe = probe_batch(1)
    for x, y in stream(12, 6, 1, 1):
        engine.learn(x, y)
    assert engine.replacements.sum() > 0
    out = engine.forward(probe)[0]
    for l in range(len(engine.widths)):
        units = torch.nonzero(method.birth[l][0] == engine.step).flatten()
        engine.weights[l][0, units] = 5.0
    torch.testing.assert_close(engine.forward(probe)[0], out, rtol=0, atol=0)


def test_runs_of_one_method_are_kept_together_whatever_the_order_given():
    """Runs are given interleaved (backprop, CBP, backprop, CBP): the engine groups each method's runs and
    every call still takes and returns the runs in the order given."""
    cbp = dict(replacement_rate=0.05, maturity_threshold=5)
    runs = [RS(1, 0.02), CBP(2, 0.02, **cbp), RS(3, 0.03), CBP(4, 0.03, **cbp)]
    engine, refs = train_both(make_mlp, runs, steps=80, data_seed=9)
    assert [m.name for _, _, m in engine.methods] == ["backprop", "continual_backprop"]
    assert engine._order == [0, 2, 1, 3]
    assert_same_params(engine, refs)
    assert engine.replacements[[1, 3]].min() > 0 and engine.replacements[[0, 2]].sum() == 0
    assert_same_metrics(engine, refs, probe_batch(4))
    x, y = next(stream(10, 1, 4, 30))
    expected = [int((learner.net(x[r]).argmax(-1) == y[r]).sum()) for r, learner in enumerate(refs)]
    assert engine.evaluate(x, y).tolist() == expected


# ----------------------------------------------------------------------------------------------- checkpoints
def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)       # checkpoints hold tensors and plain values only


@pytest.mark.parametrize("kind,optimizer", [("mlp", "sgd"), ("mlp", "adam"), ("convnet", "sgd")])
def test_run_state_roundtrip_continues_identically(kind, optimizer):
    conv = kind == "convnet"
    lr = 1e-3 if optimizer == "adam" else 0.02
    mom = 0.9 if optimizer == "sgd" and conv else 0.0
    k, m, batch, maturity = (10, 8, 4, 3) if conv else (120, 80, 1, 10)
    cbp = dict(maturity_threshold=maturity, utility="adaptable")
    runs = [CBP(81, lr, mom, replacement_rate=0.03, **cbp),
            RS(82, lr, mom, "shrink_and_perturb", noise_std=1e-3, weight_decay=1e-3),
            CBP(83, lr, mom, replacement_rate=0.08, **cbp)]
    make = (lambda s: make_conv(s, dropout=0.2)) if conv else (lambda s: make_mlp(s, dropout=0.2))
    data = list(stream(13, k + m, len(runs), batch, conv))

    engine = Lockstep([make(s) for s in range(3)], runs, optimizer=optimizer)
    for x, y in data[:k]:
        engine.learn(x, y)
    saved = _roundtrip([engine.run_state(r) for r in range(3)])
    assert engine.replacements[[0, 2]].min() > 0
    method, _ = engine.method_of(0)
    assert method.recent.shape[1] == maturity       # the window of recent replacements is part of the state
    assert method.recent.sum() > 0

    # a new engine from differently initialised nets, loaded from the saved states
    other = Lockstep([make(s + 100) for s in range(3)], runs, optimizer=optimizer)
    for r in range(3):
        other.load_run_state(r, saved[r])
    assert other.step == engine.step
    for a, b in zip(engine.params, other.params):
        assert torch.equal(a, b)

    replaced_at_load = engine.replacements.copy()
    for x, y in data[k:]:
        out_a, out_b = engine.learn(x, y), other.learn(x, y)
        assert torch.equal(out_a, out_b)
    assert (engine.replacements > replaced_at_load)[[0, 2]].any()          # replacements after the reload too
    for a, b in zip(engine.params, other.params):
        assert torch.equal(a, b)
    for name in engine.state:
        for a, b in zip(engine.state[name], other.state[name]):
            assert torch.equal(a, b)
    assert np.array_equal(engine.replacements, other.replacements)
    mine, theirs = engine.method_of(0)[0], other.method_of(0)[0]
    assert np.array_equal(mine.accumulated, theirs.accumulated)
    for l in range(len(engine.widths)):
        assert torch.equal(mine.utility[l], theirs.utility[l])
        assert torch.equal(mine.mean_activation[l], theirs.mean_activation[l])
        assert torch.equal(mine.birth[l], theirs.birth[l])
    for r in range(3):
        assert torch.equal(engine.generators[r].get_state(), other.generators[r].get_state())
    probe = probe_batch(3, n=8, conv=conv)
    assert torch.equal(engine.forward(probe)[0], other.forward(probe)[0])


def test_run_state_is_a_snapshot():
    engine = Lockstep([make_mlp(0)], [RS(1, 0.05)])
    state = engine.run_state(0)
    first = [p.clone() for p in state["params"]]
    for x, y in stream(14, 5, 1, 1):
        engine.learn(x, y)
    for a, b in zip(state["params"], first):
        assert torch.equal(a, b)


def _states_at_steps(optimizer, replacement_rate, steps=(5, 9)):
    """Run states of run 0 after ``steps[0]`` and of run 1 after ``steps[1]`` steps of one engine."""
    runs = [CBP(1, 1e-3, replacement_rate=replacement_rate, maturity_threshold=1),
            CBP(2, 1e-3, replacement_rate=replacement_rate, maturity_threshold=1)]
    engine = Lockstep([make_mlp(0), make_mlp(1)], runs, optimizer=optimizer)
    states = []
    for step, (x, y) in enumerate(stream(16, steps[1], 2, 1), start=1):
        engine.learn(x, y)
        if step in steps:
            states.append(engine.run_state(len(states)))
    return runs, states


def test_load_run_state_refuses_runs_at_different_steps_after_replacements():
    runs, (early, late) = _states_at_steps("sgd", replacement_rate=0.5)
    engine = Lockstep([make_mlp(0), make_mlp(1)], runs)
    engine.load_run_state(0, early)
    assert engine.step == 5 and engine.replacements[0].sum() > 0
    with pytest.raises(ValueError, match="same step"):
        engine.load_run_state(1, late)


def test_load_run_state_refuses_runs_at_different_steps_without_replacements():
    """Runs share the step counter (and Adam's bias-correction step): loading run 1 from step 9 next to run 0
    from step 5 would silently move run 0 to step 9."""
    runs, (early, late) = _states_at_steps("adam", replacement_rate=0.0)
    engine = Lockstep([make_mlp(0), make_mlp(1)], runs, optimizer="adam")
    engine.load_run_state(0, early)
    with pytest.raises(ValueError, match="same step"):
        engine.load_run_state(1, late)


def test_load_run_state_of_another_optimizer_or_method_is_refused():
    sgd = Lockstep([make_mlp(0)], [RS(1, 0.01, 0.9)])
    adam = Lockstep([make_mlp(0)], [RS(1, 0.01)], optimizer="adam")
    with pytest.raises(ValueError, match="optimiser"):
        adam.load_run_state(0, sgd.run_state(0))
    cbp = Lockstep([make_mlp(0)], [CBP(1, 0.01, 0.9)])
    with pytest.raises(ValueError, match="method"):
        cbp.load_run_state(0, sgd.run_state(0))


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("case", ["lengths", "empty", "batch_norm", "conv_batch_norm", "mixed_norms", "mixed_kinds",
                                  "widths", "dropouts", "inits", "adam_momentum", "bad_step_size", "bad_optimizer",
                                  "momentum_one", "not_a_lopbook_net", "unknown_method", "hyperparameters_of_another"])
def test_bad_input_is_refused(case):
    ok = RS(0, 0.01)
    two = [make_mlp(0), make_mlp(1)]
    args, kwargs = {
        "lengths": ((two, [ok]), {}),
        "empty": (([], []), {}),
        "batch_norm": (([make_mlp(0, norm="batch")], [ok]), {}),
        "conv_batch_norm": (([ConvNet(norm="batch", seed=0)], [ok]), {}),
        "mixed_norms": (([make_mlp(0), make_mlp(1, norm="layer")], [ok, ok]), {}),
        "mixed_kinds": (([make_mlp(0), make_conv(0)], [ok, ok]), {}),
        "widths": (([make_mlp(0), make_mlp(1, width=WIDTH + 1)], [ok, ok]), {}),
        "dropouts": (([make_mlp(0), make_mlp(1, dropout=0.1)], [ok, ok]), {}),
        "inits": (([make_mlp(0), MLP(IN, WIDTH, DEPTH, OUT, seed=1, init="kaiming_linear_output")], [ok, ok]), {}),
        "adam_momentum": ((two, [ok, RS(1, 0.01, 0.9)]), {"optimizer": "adam"}),
        "bad_step_size": ((two, [ok, RunSettings(seed=1, step_size=0.0)]), {}),
        "bad_optimizer": ((two, [ok, ok]), {"optimizer": "rmsprop"}),
        "momentum_one": ((two, [ok, RunSettings(seed=1, step_size=0.01, momentum=1.0)]), {}),
        "not_a_lopbook_net": (([torch.nn.Linear(3, 2)], [ok]), {}),
        "unknown_method": ((two, [ok, RunSettings(seed=1, step_size=0.01, method="redone")]), {}),
        "hyperparameters_of_another": ((two, [ok, RunSettings(seed=1, step_size=0.01, method="l2",
                                                              hyperparameters=methods.settings("continual_backprop"))]),
                                       {}),
    }[case]
    with pytest.raises(ValueError):
        Lockstep(*args, **kwargs)


@pytest.mark.parametrize("name,values,match", [
    ("continual_backprop", dict(replacement_rate=1.5), "replacement_rate"),
    ("continual_backprop", dict(replacement_rate=-0.1), "replacement_rate"),
    ("continual_backprop", dict(utility="random"), "utility"),
    ("continual_backprop", dict(decay_rate=1.0), "decay_rate"),
    ("continual_backprop", dict(weight_decay=1e-3), "no hyperparameter 'weight_decay'.*l2"),
    ("l2", dict(weight_decay=0.0), "weight_decay"),
    ("shrink_and_perturb", dict(noise_std=-1.0), "noise_std"),
    ("l2", dict(replacement_rate=1e-4), "continual_backprop"),
])
def test_impossible_hyperparameters_are_refused_by_name(name, values, match):
    with pytest.raises(ValueError, match=match):
        methods.settings(name, **values)


def test_norm_layers_error_points_to_the_reference_backend():
    with pytest.raises(ValueError, match="reference"):
        Lockstep([make_mlp(0, norm="batch")], [RS(0, 0.01)])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mlp_layer_norm_matches_reference(optimizer):
    """Layer norm (written out by hand in the engine): its gains and shifts are trained, decayed, perturbed and
    reset with the replaced units exactly as in the learners."""
    scale = 1.0 if optimizer == "sgd" else 0.05
    runs = [RS(41, 0.02 * scale),
            RS(42, 0.02 * scale, 0.0, "shrink_and_perturb", weight_decay=1e-3, noise_std=1e-3),
            CBP(43, 0.01 * scale, replacement_rate=0.03, maturity_threshold=20)]
    engine, refs = train_both(lambda s: make_mlp(s, norm="layer"), runs, steps=250, optimizer=optimizer,
                              data_seed=4)
    assert engine.layer_norm
    assert_same_params(engine, refs)          # compares every parameter, layer norm's gains and shifts included
    assert engine.replacements[2].sum() > 0
    assert_same_cbp_state(engine, refs)
    assert_same_metrics(engine, refs, probe_batch(len(runs)))


def test_engine_copies_the_weights_of_the_nets():
    net = make_mlp(0)
    original = [p.detach().clone() for p in net.parameters()]
    engine = Lockstep([net], [RS(0, 0.1)])
    for p, q in zip(engine.params, original):
        assert torch.equal(p[0], q)
    for x, y in stream(15, 3, 1, 1):
        engine.learn(x, y)
    for p, q in zip(net.parameters(), original):       # the net given is left alone
        assert torch.equal(p.detach(), q)
    assert not all(torch.equal(p[0], q) for p, q in zip(engine.params, original))
    assert math.isfinite(float(engine.params[0].sum()))


# ----------------------------------------------------------------------------------------------- CUDA
# The same comparisons with both implementations on a GPU (the engine's grouped convolutions and on-device
# bookkeeping only run there). Skipped on machines without CUDA: run `pytest tests/test_engine.py -k cuda` on one.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def no_tf32():
    """Full float32 precision in CUDA matmuls and convolutions (TF32 rounds differently in the two implementations)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@needs_cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mlp_on_cuda_matches_reference_learners_on_cuda(optimizer, no_tf32):
    lr = 0.02 if optimizer == "sgd" else 1e-3
    runs = [RS(1, lr), RS(2, lr, 0.0, "shrink_and_perturb", weight_decay=1e-3, noise_std=1e-3),
            CBP(3, lr, replacement_rate=0.03, maturity_threshold=20)]
    engine, refs = train_both(lambda s: make_mlp(s, dropout=0.1), runs, steps=200, optimizer=optimizer,
                              device="cuda")
    assert engine.params[0].is_cuda
    assert_same_params(engine, refs)
    assert engine.replacements[2].sum() > 0
    assert_same_cbp_state(engine, refs)
    assert_same_metrics(engine, refs, probe_batch(len(runs)).cuda())


@needs_cuda
def test_convnet_on_cuda_matches_reference_learners_on_cuda(float64):
    runs = [RS(51, 2 ** -7, 0.875), CBP(52, 2 ** -7, 0.875, replacement_rate=0.02, maturity_threshold=3)]
    engine, refs = train_both(make_conv, runs, steps=15, batch=8, conv=True, data_seed=6, atol=1e-7, device="cuda")
    assert engine.params[0].is_cuda
    assert_same_params(engine, refs, atol=1e-7)
    assert (engine.replacements[1] > 0).all()
    assert_same_cbp_state(engine, refs)
    assert_same_metrics(engine, refs, probe_batch(len(runs), n=16, conv=True).cuda())


def test_a_method_that_cannot_train_the_network_is_an_error_naming_it(monkeypatch):
    """A method may refuse a network (its ``supports`` gives the reason): the engine says so instead of training
    something else."""
    class Picky(methods.REGISTRY["backprop"]):
        name, label = "picky", "Picky"

        @classmethod
        def supports(cls, net, optimizer="sgd", momentum=0.0):
            return "it needs a network without dropout" if net.dropout else None

    monkeypatch.setitem(methods.REGISTRY, "picky", Picky)
    runs = [RS(0, 0.01), RS(1, 0.01, 0.0, "picky")]
    Lockstep([make_mlp(0), make_mlp(1)], runs)                       # fine without dropout
    with pytest.raises(ValueError, match="method 'picky' cannot train this network: it needs a network without"):
        Lockstep([make_mlp(0, dropout=0.1), make_mlp(1, dropout=0.1)], runs)
    with pytest.raises(ValueError, match="picky"):
        Learner(make_mlp(0, dropout=0.1), 0.01, method="picky")


# ----------------------------------------------------------------------------------------------- activations, loss
@pytest.mark.parametrize("activation", ["leaky_relu", "elu", "swish", "tanh", "sigmoid", "linear", "relu"])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_activations_and_losses_match_the_reference(activation, loss):
    """The hand-written backward pass through every activation function, for classification and for
    regression (one output, squared error), against autograd in the reference learners."""
    from lopbook.nets import MLP

    regression = loss == "squared_error"
    n_out = 1 if regression else OUT
    runs = [RS(1, 0.01), CBP(2, 0.01, replacement_rate=0.03, maturity_threshold=20),
            RS(3, 0.02, 0.0, "shrink_and_perturb", weight_decay=1e-3, noise_std=1e-3)]
    make = lambda s: MLP(IN, WIDTH, DEPTH, n_out, seed=s, activation=activation)
    engine = Lockstep([make(r) for r in range(3)], runs, loss=loss)
    refs = [Learner(make(r), run.step_size, method=run.method, seed=run.seed, loss=loss,
                    **dataclasses.asdict(run.resolved())) for r, run in enumerate(runs)]
    g = make_generator(3)
    total = torch.zeros(3)
    for _ in range(150):
        x = torch.rand(3, 1, IN, generator=g)
        y = torch.randn(3, 1, generator=g) if regression else torch.randint(0, OUT, (3, 1), generator=g)
        out = engine.learn(x, y)
        for r, learner in enumerate(refs):
            _, ref_out = learner.learn(x[r], y[r])
            torch.testing.assert_close(out[r], ref_out, rtol=1e-4, atol=1e-5)
            if regression:
                total[r] += float((ref_out[0, 0] - y[r, 0]) ** 2)
    assert_same_params(engine, refs, atol=1e-4)
    assert_same_cbp_state(engine, refs)
    assert_same_metrics(engine, refs, probe_batch(3))
    if regression:              # train_online sums the squared errors of the predictions made before each step
        x = torch.rand(3, 20, IN, generator=g)
        y = torch.randn(3, 20, generator=g)
        errors = engine.train_online(x, y)
        expected = [sum(float((learner.learn(x[r, i:i + 1], y[r, i:i + 1])[1][0, 0] - y[r, i]) ** 2)
                        for i in range(20)) for r, learner in enumerate(refs)]
        torch.testing.assert_close(errors, torch.tensor(expected), rtol=1e-4, atol=1e-5)


def test_squared_error_needs_one_output():
    with pytest.raises(ValueError, match="one output"):
        Lockstep([make_mlp(0)], [RS(0, 0.01)], loss="squared_error")
    with pytest.raises(ValueError, match="loss"):
        Lockstep([make_mlp(0)], [RS(0, 0.01)], loss="hinge")
