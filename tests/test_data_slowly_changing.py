"""Tests for the slowly-changing regression stream (lopbook.data.slowly_changing).

Known answers: a hand-built target of 3 inputs and 2 LTUs whose outputs are
worked out by hand below, the Nature threshold formula recomputed from the
weights, and the properties of the input stream (one bit flipped per period,
fresh fast bits, reproducible from the seed and the position alone).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lopbook import data
from lopbook.data import SlowlyChangingRegression, ltu_target, ltu_thresholds

# A hand-built target on m = 3 inputs (weights on x1, x2, x3, then the constant
# bit).  Unit 1: W = (+1, -1, +1, +1), S = 1; unit 2: W = (-1, -1, +1, -1), S = 3.
HAND_W = [[1, -1, 1, 1], [-1, -1, 1, -1]]
HAND_V = [1, -1]
INPUTS = list(itertools.product((0, 1), repeat=3))  # (x1, x2, x3)


def with_constant(rows) -> torch.Tensor:
    return torch.tensor([list(r) + [1] for r in rows], dtype=torch.float32)


def test_hand_built_target_beta_half() -> None:
    # beta = 0.5: theta = 0.5 * 4 - S = (1, -1).
    # pre1 = x1 - x2 + x3 + 1 fires when > 1; pre2 = -x1 - x2 + x3 - 1 when > -1.
    theta = ltu_thresholds(HAND_W, 0.5)
    assert theta.tolist() == [1.0, -1.0]
    y = ltu_target(with_constant(INPUTS), HAND_W, theta, HAND_V)
    # (x1 x2 x3): 000 pre (1, -1) -> neither fires (strict >), 001 (2, 0) -> both,
    # 010 (0, -2), 011 (1, -1), 100 (2, -2) -> unit 1, 101 (3, -1) -> unit 1,
    # 110 (1, -3), 111 (2, -2) -> unit 1.  y = f1 - f2.
    by_hand = {
        (0, 0, 0): 0, (0, 0, 1): 0, (0, 1, 0): 0, (0, 1, 1): 0,
        (1, 0, 0): 1, (1, 0, 1): 1, (1, 1, 0): 0, (1, 1, 1): 1,
    }  # fmt: skip
    assert y.dtype == torch.float32
    assert y.tolist() == [by_hand[r] for r in INPUTS]
    # with v = (0, 1) the output is unit 2 alone: it fires only on 001
    y2 = ltu_target(with_constant(INPUTS), HAND_W, theta, [0, 1])
    assert y2.tolist() == [float(r == (0, 0, 1)) for r in INPUTS]


def test_thresholds_follow_beta() -> None:
    # beta = 0.75: theta = 3 - S = (2, 0): unit 1 fires only on 101 (pre 3),
    # unit 2 never (its largest pre is 0, on 001).
    theta = ltu_thresholds(HAND_W, 0.75)
    assert theta.tolist() == [2.0, 0.0]
    y = ltu_target(with_constant(INPUTS), HAND_W, theta, HAND_V)
    assert y.tolist() == [float(r == (1, 0, 1)) for r in INPUTS]
    # beta 0 and 1: every unit at the bottom or the top of its range
    assert ltu_thresholds(HAND_W, 0.0).tolist() == [-1.0, -3.0]
    assert ltu_thresholds(HAND_W, 1.0).tolist() == [3.0, 1.0]
    # an exact product: 0.1 * 30 is 3, not 3.0000000000000004
    w30 = torch.ones(1, 30)
    assert ltu_thresholds(w30, 0.1).tolist() == [3.0]


def test_authors_code_threshold_rule() -> None:
    # S = negatives among the inputs + bias / 2 = (1 + 1/2, 2 - 1/2)
    theta = ltu_thresholds(HAND_W, 0.5, rule="authors_code")
    assert theta.tolist() == [0.5, 0.5]
    y = ltu_target(with_constant(INPUTS), HAND_W, theta, HAND_V, output_bias=-1)
    # unit 1 (bias +1) fires when pre1 >= 1: all but 010; unit 2 (bias -1) would
    # need pre2 >= 1 and never fires (under the Nature rule it fires on 001)
    assert y.tolist() == [float(r != (0, 1, 0)) - 1 for r in INPUTS]
    with pytest.raises(ValueError, match="rule"):
        ltu_thresholds(HAND_W, 0.5, rule="paper")


def test_ltu_target_checks_its_inputs() -> None:
    theta = ltu_thresholds(HAND_W, 0.5)
    with pytest.raises(ValueError, match="0 and 1"):
        ltu_target(with_constant([(0, 2, 1)]), HAND_W, theta, HAND_V)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        ltu_target(torch.zeros(2, 3), HAND_W, theta, HAND_V)
    with pytest.raises(ValueError, match="-1 and \\+1"):
        ltu_thresholds([[1, 0, 1, 1]], 0.5)


def test_target_network_is_the_nature_formula() -> None:
    s = SlowlyChangingRegression(seed=11)
    w = s.weights.numpy()
    assert w.shape == (100, 21) and set(np.unique(w)) == {-1.0, 1.0}
    assert set(np.unique(s.output_weights.numpy())) == {-1.0, 1.0}
    assert s.output_bias == 0.0
    negatives = (w < 0).sum(axis=1)
    assert np.allclose(s.thresholds.numpy(), 0.7 * 21 - negatives)
    # the target, unit by unit, from the formula
    x, y = s.examples(0, 300)
    for row, target in zip(x.numpy().astype(int), y.tolist()):
        total = 0
        for i in range(100):
            pre = int(np.dot(w[i].astype(int), row))
            total += int(s.output_weights[i]) * (pre > 0.7 * 21 - negatives[i])
        assert total == target
    # target() takes x with or without the constant bit
    assert torch.equal(s.target(x), y)
    assert torch.equal(s.target(x[:, :20]), y)
    with pytest.raises(ValueError, match="constant bit"):
        s.target(torch.cat([x[:, :20], torch.zeros(300, 1)], dim=1))
    with pytest.raises(ValueError, match=r"\[N, 20\]"):
        s.target(torch.zeros(3, 19))


def test_targets_are_integers_in_range_with_several_values() -> None:
    s = SlowlyChangingRegression(seed=0)
    _, y = s.examples(0, 100_000)
    assert y.dtype == torch.float32 and y.shape == (100_000,)
    assert torch.equal(y, y.round())
    assert -100 <= y.min() and y.max() <= 100
    assert len(torch.unique(y)) >= 5
    # the authors'-code rule adds an output bias of -1 or +1
    a = SlowlyChangingRegression(seed=0, threshold_rule="authors_code")
    assert a.output_bias in (-1.0, 1.0)
    assert torch.equal(a.weights, s.weights)  # the same network draw
    _, ya = a.examples(0, 20_000)
    assert torch.equal(ya, ya.round()) and -101 <= ya.min() and ya.max() <= 101
    assert torch.equal(ya, a.target(a.examples(0, 20_000)[0]))


def test_flip_one_changes_exactly_one_bit() -> None:
    s = SlowlyChangingRegression(seed=3)
    assert s.change == "flip_one"  # Nature's variant is the default
    states = torch.stack([s.slow_bits(k) for k in range(1200)])  # > 1 chunk
    assert states.shape == (1200, 15) and set(states.unique().tolist()) <= {0, 1}
    changed = states[1:] != states[:-1]
    assert (changed.sum(dim=1) == 1).all()
    which = changed.to(torch.int64).argmax(dim=1)
    assert which.tolist() == [s.flipped_bit(k) for k in range(1, 1200)]
    # uniformly chosen: every bit gets flipped, none far more often than others
    counts = torch.bincount(which, minlength=15)
    assert counts.min() > 40 and counts.max() < 130  # mean 80
    with pytest.raises(ValueError, match="period 0"):
        s.flipped_bit(0)


def test_redraw_all_redraws_the_slow_bits() -> None:
    s = SlowlyChangingRegression(seed=3, change="redraw_all")
    states = torch.stack([s.slow_bits(k) for k in range(1200)])
    distance = (states[1:] != states[:-1]).sum(dim=1).to(torch.float64)
    assert 7.0 < distance.mean() < 8.0  # 15 / 2 on average
    assert distance.max() >= 11 and (distance > 1).float().mean() > 0.9
    assert abs(states.mean() - 0.5) < 0.02
    with pytest.raises(ValueError, match="flip_one"):
        s.flipped_bit(1)
    # the same seed starts from the same slow bits in both modes
    assert torch.equal(s.slow_bits(0), SlowlyChangingRegression(seed=3).slow_bits(0))


def test_fast_bits_fresh_and_slow_bits_constant_within_a_period() -> None:
    s = SlowlyChangingRegression(seed=5)
    x, _ = s.examples(20_000, 10_000)  # exactly period 2
    assert x.shape == (10_000, 21) and x.dtype == torch.float32
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert (x[:, :15] == s.slow_bits(2)).all()
    assert (x[:, 20] == 1).all()
    fast = x[:, 15:20]
    assert (fast.mean(dim=0) - 0.5).abs().max() < 0.03  # sd of a mean: 0.005
    # fresh every example: consecutive rows agree as often as chance (1/32)
    same = (fast[1:] == fast[:-1]).all(dim=1).double().mean()
    assert abs(same - 1 / 32) < 0.01
    assert len(torch.unique(fast, dim=0)) == 32
    # the next period: one slow bit differs, the fast bits are new ones
    x2, _ = s.examples(30_000, 10_000)
    assert (x2[:, :15] != x[:, :15]).all(dim=0).sum() == 1
    assert not torch.equal(x2[:, 15:20], fast)
    # without the constant bit, x has just the 20 inputs
    nb = SlowlyChangingRegression(seed=5, bias_input=False)
    xb, yb = nb.examples(20_000, 10_000)
    assert torch.equal(xb, x[:, :20]) and nb.n_features == 20
    assert torch.equal(yb, s.examples(20_000, 10_000)[1])


def test_reproducible_and_resumable() -> None:
    kw = dict(change_every=3)  # many periods: slow chunks and fast blocks cross
    whole_x, whole_y = SlowlyChangingRegression(seed=9, **kw).examples(0, 25_000)
    for start, n in [(0, 1), (9_995, 10), (3_071, 3), (12_345, 7_777), (24_999, 1)]:
        fresh = SlowlyChangingRegression(seed=9, **kw)  # nothing cached
        x, y = fresh.examples(start, n)
        assert torch.equal(x, whole_x[start : start + n])
        assert torch.equal(y, whole_y[start : start + n])
    # the same in pieces, through batches(), and for the default problem
    s = SlowlyChangingRegression(seed=9, **kw)
    parts = list(s.batches(0, 25_000, size=4_096))
    assert torch.equal(torch.cat([p[0] for p in parts]), whole_x)
    assert torch.equal(torch.cat([p[1] for p in parts]), whole_y)
    d1, d2 = SlowlyChangingRegression(seed=9), SlowlyChangingRegression(seed=9)
    assert torch.equal(
        d1.examples(0, 30_000)[0][25_000:], d2.examples(25_000, 5_000)[0]
    )
    # the example's slow bits are those of its period
    for t in (0, 2, 3, 10_000, 24_999):
        assert torch.equal(whole_x[t, :15], s.slow_bits(s.change_index(t)))
    assert s.examples(7, 0)[0].shape == (0, 21)


def test_examples_match_the_target_in_every_setting() -> None:
    settings = [
        {},
        dict(change_every=1),
        dict(n_slow=20),  # no fast bits
        dict(n_slow=1, n_inputs=16, hidden=7),  # 2^15 fast patterns: no table
        dict(change="redraw_all", threshold_rule="authors_code", bias_input=False),
    ]
    for kw in settings:
        s = SlowlyChangingRegression(seed=2, **kw)
        x, y = s.examples(123, 20_000)
        assert torch.equal(y, s.target(x)), kw


def test_different_seeds_give_different_target_networks() -> None:
    a, b = SlowlyChangingRegression(seed=0), SlowlyChangingRegression(seed=1)
    assert not torch.equal(a.weights, b.weights)
    assert not torch.equal(a.examples(0, 100)[0], b.examples(0, 100)[0])
    assert torch.equal(a.weights, SlowlyChangingRegression(seed=0).weights)
    assert a.identity == b.identity  # the seed is the run's, not the problem's


def test_identity_and_name() -> None:
    s = SlowlyChangingRegression(seed=4)
    assert s.identity == (
        "slowly-changing-regression-20in-15slow-100h-b0.7-T10000-flip_one-gen1"
    )
    variants = [
        dict(n_inputs=21),
        dict(n_slow=14),
        dict(hidden=50),
        dict(beta=0.75),
        dict(beta=0.7000001),
        dict(change_every=1_000),
        dict(change="redraw_all"),
        dict(bias_input=False),
        dict(threshold_rule="authors_code"),
    ]
    identities = {SlowlyChangingRegression(seed=4, **kw).identity for kw in variants}
    assert len(identities | {s.identity}) == len(variants) + 1
    assert "synthetic" in s.name and "LTU" in s.name and "one flipped" in s.name
    assert s.warning is None
    assert "SlowlyChangingRegression" in data.__all__


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_slow=21), "n_slow"),
        (dict(n_slow=0), "n_slow"),
        (dict(change_every=0), "change_every"),
        (dict(change_every=-5), "change_every"),
        (dict(change_every=2.5), "change_every"),
        (dict(change="flip_two"), "change must be one of"),
        (dict(threshold_rule="paper"), "threshold_rule"),
        (dict(beta=1.5), "beta"),
        (dict(beta="0.7"), "beta"),
        (dict(hidden=0), "hidden"),
        (dict(n_inputs=True), "n_inputs"),
        (dict(bias_input=1), "bias_input"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments(kw, match) -> None:
    kw = {"seed": 0, **kw}
    with pytest.raises(ValueError, match=match):
        SlowlyChangingRegression(**kw)


def test_bad_positions() -> None:
    s = SlowlyChangingRegression(seed=0)
    with pytest.raises(ValueError, match="start"):
        s.examples(-1, 5)
    with pytest.raises(ValueError, match="change_index"):
        s.slow_bits(-2)
    with pytest.raises(ValueError, match="size"):
        next(s.batches(0, 10, size=0))
