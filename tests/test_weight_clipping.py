"""Weight clipping (Elsayed, Lan, Lyle, Mahmood 2024): after every step each weight and bias of layer l is clipped
to [-kappa s_l, kappa s_l], s_l the half-width of the layer's initial uniform distribution."""
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


def learner(method="weight_clipping", seed=0, lr=0.5, norm=None, **hp):
    return Learner(MLP(IN, WIDTH, 2, OUT, norm=norm, seed=seed), lr, method=method, seed=seed, **hp)


def test_clipping_known_answer_inside_untouched_outside_on_the_bound():
    wc = learner(kappa=2.0)
    nets, method = wc.nets, wc.method
    bound = 2.0 * nets.init_bounds[0]
    w, b = nets.weights[0][0], nets.biases[0][0]
    with torch.no_grad():
        w.zero_()
        w[0, :4] = torch.tensor([0.5 * bound, -0.99 * bound, 1.5 * bound, -3.0 * bound])
        b[:3] = torch.tensor([0.1 * bound, 7.0 * bound, -2.0 * bound])
    method.after_step([])
    expected_w = torch.tensor([0.5 * bound, -0.99 * bound, bound, -bound])
    assert torch.equal(w[0, :4], expected_w)                      # inside: untouched, to the bit
    assert torch.equal(w[1:], torch.zeros_like(w[1:]))
    assert torch.equal(b[:3], torch.tensor([0.1 * bound, bound, -bound]))   # a bias: its own layer's bound


@pytest.mark.parametrize("clip_output", [True, False])
def test_training_keeps_every_weight_inside_kappa_times_its_layers_bound(clip_output):
    """With a large step size the weights would leave their range; clipped, each layer stays inside its own
    kappa * s_l, and the parameters clipping leaves alone are what plain SGD made of them."""
    kappa = 1.0
    wc = learner(kappa=kappa, clip_output=clip_output, lr=1.0)
    plain = learner("backprop", lr=1.0)
    nets = wc.nets
    data = batches(1, 40)
    clipped_steps = 0
    for x, y in data:
        before = [p.detach().clone() for p in wc.net.parameters()]
        wc.learn(x, y)
        with torch.no_grad():                          # the same step, unclipped, from the same parameters
            for p, q in zip(plain.net.parameters(), before):
                p.copy_(q)
        plain.learn(x, y)
        clipped = range(len(nets.weights) if clip_output else len(nets.weights) - 1)
        for l in range(len(nets.weights)):
            bound = kappa * nets.init_bounds[l]
            for mine, sgd in ((nets.weights[l][0], plain.nets.weights[l][0]), (nets.biases[l][0], plain.nets.biases[l][0])):
                if l in clipped:
                    assert mine.abs().max() <= bound
                    torch.testing.assert_close(mine, sgd.clamp(-bound, bound), rtol=0, atol=0)
                else:
                    assert torch.equal(mine, sgd)
        clipped_steps += float(wc.method.clipped_fraction()[0]) > 0
    assert clipped_steps > 10                             # the step size was large enough to need clipping
    if not clip_output:
        assert nets.weights[-1].abs().max() > kappa * nets.init_bounds[-1]


def test_layer_norm_gains_and_shifts_are_not_clipped():
    wc = learner(kappa=1.0, norm="layer")
    with torch.no_grad():
        for g in wc.nets.gains:
            g.fill_(5.0)
    wc.method.after_step([])
    assert all(torch.equal(g, torch.full_like(g, 5.0)) for g in wc.nets.gains)


def test_each_run_is_clipped_with_its_own_kappa_in_lockstep():
    kappas = (1.0, 3.0)
    runs = [RunSettings(seed=s, step_size=0.5, method="weight_clipping",
                        hyperparameters=methods.settings("weight_clipping", kappa=k)) for s, k in zip((1, 2), kappas)]
    engine = Lockstep([MLP(IN, WIDTH, 2, OUT, seed=s) for s in (1, 2)], runs)
    g = make_generator(5)
    for _ in range(60):
        engine.learn(torch.rand(2, 4, IN, generator=g), torch.randint(0, OUT, (2, 4), generator=g))
    bounds = engine.nets.init_bounds
    for r, kappa in enumerate(kappas):
        top = [float(w[r].abs().max() / bound) for w, bound in zip(engine.weights, bounds)]
        assert max(top) <= kappa
    assert max(float(w[0].abs().max() / b) for w, b in zip(engine.weights, bounds)) == pytest.approx(1.0)


@pytest.mark.parametrize("values,match", [(dict(kappa=0.5), "kappa"), (dict(clip_output=1), "clip_output"),
                                          (dict(threshold=0.1), "redo")])
def test_bad_hyperparameters_are_refused(values, match):
    with pytest.raises(ValueError, match=match):
        methods.settings("weight_clipping", **values)
