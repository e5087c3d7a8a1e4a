"""Self-Normalized Resets (Farias and Jozefiak 2025): a unit silent for tau examples is reset; every update_period
steps tau moves to the percentile of the unit's recorded waits between firings (if below tau; else tau doubles),
clipped to [min_threshold, max_threshold]."""
import copy
import io

import pytest
import torch

from lopbook import methods
from lopbook.engine import Lockstep, RunSettings
from lopbook.learners import Learner
from lopbook.methods.self_normalized_resets import BINS_PER_OCTAVE, wait_bin
from lopbook.nets import MLP
from lopbook.runtime import make_generator

IN, OUT, WIDTH = 12, 3, 10


def batches(seed, n, batch=4):
    g = make_generator(seed)
    return [(torch.rand(batch, IN, generator=g), torch.randint(0, OUT, (batch,), generator=g)) for _ in range(n)]


def snr(seed=0, lr=0.05, **hp):
    hp = dict(dict(initial_threshold=10, min_threshold=2, max_threshold=1000, update_period=1000), **hp)
    return Learner(MLP(IN, WIDTH, 2, OUT, seed=seed), lr, method="self_normalized_resets", seed=seed + 1, **hp)


def test_waits_fall_in_bins_of_logarithmic_width():
    assert BINS_PER_OCTAVE == 4
    assert [wait_bin(a) for a in (0, 1, 2, 3, 4, 7, 8, 1000)] == [0, 1, 5, 7, 9, 12, 13, 40]
    waits = torch.tensor([0, 1, 2, 3, 4, 7, 8, 1000, 10_000])
    assert wait_bin(waits).tolist() == [wait_bin(int(a)) for a in waits]
    method = snr().method
    longest = method.longest_wait
    for a in range(1, 1000):                        # each bin's longest wait is in it, and the next one is not
        j = wait_bin(a)
        assert wait_bin(int(longest[j])) == j and wait_bin(int(longest[j]) + 1) > j and a <= longest[j]


def test_thresholds_move_to_the_percentile_of_the_waits_or_grow():
    method = snr(percentile=0.9, initial_threshold=50, min_threshold=3).method
    waits = method.waits[0][0]
    waits[0, wait_bin(6)] = 9                      # unit 0: 9 waits of 6 and one of 40; the 90% wait is 6
    waits[0, wait_bin(40)] = 1
    waits[1, wait_bin(6)] = 8                      # unit 1: only 80% of its waits are short: the 90% wait is 40
    waits[1, wait_bin(40)] = 2
    waits[2, wait_bin(100)] = 5                    # unit 2: its waits are longer than tau: it grows (x 2)
    waits[3, 0] = 7                                # unit 3: it only ever fired on consecutive steps: the floor
    method.thresholds[0][0, 4] = 400               # unit 4: no waits at all, and a long tau: the floor too
    method.update_thresholds(0)
    tau = method.thresholds[0][0].tolist()
    assert tau[:5] == [int(method.longest_wait[wait_bin(6)]), int(method.longest_wait[wait_bin(40)]), 100, 3, 3]
    assert 6 <= tau[0] <= 6 * 2 ** (1 / BINS_PER_OCTAVE) and 40 <= tau[1] <= 40 * 2 ** (1 / BINS_PER_OCTAVE)
    assert method.waits[0].sum() == 0              # the record starts afresh
    method.thresholds[0][0, 5] = 900               # growth stops at max_threshold
    method.waits[0][0, 5, wait_bin(950)] = 1
    method.update_thresholds(0)
    assert int(method.thresholds[0][0, 5]) == 1000


def test_a_unit_that_stops_firing_is_reset_after_its_threshold_and_one_that_fires_is_not():
    """Batches of 4 examples: a silent unit's age grows 4, 8, 12 -> reset at step 3 (tau = 10), and again 3 steps
    after it is silenced once more; a unit firing on every example is never reset. (Units of the last hidden layer,
    whose outgoing weights, the output layer's, no other reset touches.)"""
    learner = snr(initial_threshold=10)
    net, method = learner.net, learner.method
    silent, busy = 2, 7
    layer = net.hidden[1]
    with torch.no_grad():
        layer.weight[[silent, busy]] = 0.0
        layer.bias[silent], layer.bias[busy] = -1.0, 1.0
    data = batches(3, 8)
    for step, (x, y) in enumerate(data[:3], start=1):
        learner.learn(x, y)
        assert int(method.ages[1][0, busy]) == 0
        if step < 3:
            assert int(method.ages[1][0, silent]) == 4 * step
            assert torch.count_nonzero(layer.weight[silent]) == 0
    assert int(method.ages[1][0, silent]) == 0                     # reset at step 3
    assert torch.count_nonzero(layer.weight[silent]) == WIDTH      # fresh incoming weights
    assert float(layer.bias[silent].detach()) == 0.0 and torch.count_nonzero(net.output.weight[:, silent]) == 0
    assert int(method.waits[1][0, silent, wait_bin(12)]) == 1      # the reset recorded its wait
    resets = int(method.resets[0, 1])
    assert resets >= 1
    with torch.no_grad():
        layer.weight[silent] = 0.0                                 # silenced again
        layer.bias[silent] = -1.0
    for x, y in data[3:6]:
        learner.learn(x, y)
    assert int(method.ages[1][0, silent]) == 0 and method.resets[0, 1] >= resets + 1
    # never reset: its incoming weights are still the small ones training made of zeros, and its bias is positive
    assert float(layer.weight[busy].detach().abs().max()) < 0.05 and float(layer.bias[busy].detach()) > 0.5


def test_runs_keep_their_own_ages_and_thresholds_and_are_checkpointed():
    hp = dict(initial_threshold=8, min_threshold=2, max_threshold=64, update_period=10)
    runs = [RunSettings(seed=s, step_size=0.05, method="self_normalized_resets",
                        hyperparameters=methods.settings("self_normalized_resets", percentile=p, **hp))
            for s, p in ((1, 0.5), (2, 0.99))]
    g = make_generator(9)
    data = [(torch.rand(2, 2, IN, generator=g), torch.randint(0, OUT, (2, 2), generator=g)) for _ in range(60)]
    engine = Lockstep([MLP(IN, WIDTH, 2, OUT, seed=s) for s in (1, 2)], runs)
    for x, y in data[:30]:
        engine.learn(x, y)
    method, _ = engine.method_of(0)
    assert method.resets.sum() > 0
    assert not torch.equal(method.thresholds[0][0], method.thresholds[0][1])
    buffer = io.BytesIO()
    torch.save([engine.run_state(r) for r in range(2)], buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    other = Lockstep([MLP(IN, WIDTH, 2, OUT, seed=s) for s in (10, 11)], runs)
    for r in range(2):
        other.load_run_state(r, copy.deepcopy(saved[r]))
    resets_at_load = method.resets.copy()
    for x, y in data[30:]:
        assert torch.equal(engine.learn(x, y), other.learn(x, y))
    assert (method.resets > resets_at_load).any()                   # resets after the reload too
    theirs = other.method_of(0)[0]
    assert (method.resets == theirs.resets).all()
    for a, b in zip(method.ages + method.thresholds + method.waits, theirs.ages + theirs.thresholds + theirs.waits):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(engine.params, other.params))


@pytest.mark.parametrize("values,match", [
    (dict(percentile=0.0), "percentile"), (dict(percentile=1.5), "percentile"),
    (dict(min_threshold=0), "min_threshold"), (dict(initial_threshold=50, max_threshold=20), "thresholds"),
    (dict(update_period=0), "update_period"), (dict(expansion=1.0), "expansion"),
    (dict(max_threshold=2.5), "max_threshold")])
def test_bad_hyperparameters_are_refused(values, match):
    with pytest.raises(ValueError, match=match):
        methods.settings("self_normalized_resets", **values)
