"""lopbook.timing: each method's cost per step relative to plain backprop, measured by the lockstep engine.
The tests check what is measured, never a timed threshold: one ratio per config, the baseline's exactly 1, and a
method that does extra work on every step costing more than backprop."""
import dataclasses
import time

import pytest

from lopbook import methods, timing
from lopbook.configs import ContinualImageNet, PermutedMNIST
from lopbook.methods.base import Method

BASE = PermutedMNIST(width=16, tasks=1)


def busy(seconds):
    """Keep this thread's processor busy for ``seconds`` of its own processor time (the CPU clock that
    :mod:`lopbook.timing` reads; a sleep would not count)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Sleepy(Method):
    """Backprop that also computes for a millisecond after every step: certainly costlier than backprop."""

    name = "sleepy"
    label = "Sleepy"

    def after_step(self, hidden):
        busy(1e-3)


@pytest.fixture
def sleepy(monkeypatch):
    monkeypatch.setitem(methods.REGISTRY, "sleepy", Sleepy)
    return BASE.with_method("sleepy")


def test_one_ratio_per_config_the_baseline_is_one_and_extra_work_costs_more(sleepy):
    configs = {"Backprop": BASE, "Sleepy": sleepy, "L2 Init": BASE.with_method("l2_init")}
    ratios = timing.cost_ratios(configs, steps=20, repeats=2)
    assert list(ratios) == list(configs)
    assert ratios["Backprop"] == 1.0
    assert ratios["Sleepy"] > 1.0
    assert all(r > 0 for r in ratios.values())


def test_upgd_does_more_per_step_than_backprop():
    """UPGD keeps a utility per weight and perturbs every weight on every step."""
    ratios = timing.cost_ratios({"Backprop": BASE, "UPGD": BASE.with_method("upgd")}, steps=30, repeats=2)
    assert ratios["UPGD"] > 1.0


def test_step_times_are_seconds_per_step_and_the_baseline_can_be_named(sleepy):
    times = timing.step_times({"a": BASE, "b": sleepy}, runs=1, steps=10, repeats=1)
    assert set(times) == {"a", "b"} and times["b"] >= 1e-3          # a step of "b" works 1 ms more
    ratios = timing.cost_ratios({"a": BASE, "b": sleepy}, baseline="b", runs=1, steps=10, repeats=1)
    assert ratios["b"] == 1.0 and ratios["a"] < 1.0


def test_a_layer_norm_network_is_timed_against_plain_backprop():
    nap = dataclasses.replace(BASE, norm="layer").with_method("normalize_and_project")
    ratios = timing.cost_ratios({"Backprop": BASE, "NaP": nap}, steps=10, repeats=1)
    assert ratios["NaP"] > 0


@pytest.mark.parametrize("configs,kwargs,match", [
    ({}, {}, "at least one config"),
    ({"a": BASE}, dict(steps=0), ">= 1"),
    ({"a": BASE.with_method("l2_init")}, {}, "name the baseline"),
    ({"a": BASE}, dict(baseline="b"), "baseline 'b' is not one of the configs"),
    ({"a": ContinualImageNet(tasks=1)}, {}, "Permuted MNIST configs"),
])
def test_bad_input_is_a_clear_error(configs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        timing.cost_ratios(configs, **kwargs)
