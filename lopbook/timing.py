"""What a learning method costs per step, measured by the lockstep engine.

:func:`cost_ratios` trains a lockstep group of ``runs`` networks of each config on
the same random examples, one example at a time, as the experiments do, and returns
each method's time per step divided by plain backprop's. On the CPU the time is the
processor time of the training thread (the runner trains with one thread), which
other work on a shared machine changes little; on a GPU it is the wall-clock time.
The groups are timed in turns, in one sitting, and each keeps its fastest turn: other
work only ever slows a turn down, so the fastest is the best estimate of the method's
own cost, and timing all of them in the same minutes keeps the ratios fair.

>>> from lopbook.configs import PermutedMNIST
>>> base = PermutedMNIST(width=16, tasks=1)
>>> ratios = cost_ratios({"Backprop": base, "UPGD": base.with_method("upgd")},
...                      steps=20, repeats=1)
>>> ratios["Backprop"], ratios["UPGD"] > 1
(1.0, True)
"""

from __future__ import annotations

import dataclasses
import math
import time
import types

import torch

from .runner import Data, experiment_of, make_trainer
from .runtime import get_device, make_generator

__all__ = ["step_times", "cost_ratios"]


def step_times(
    configs: dict,
    runs: int = 2,
    steps: int = 500,
    repeats: int = 3,
    device=None,
    seed: int = 0,
) -> dict[str, float]:
    """Seconds per step of a lockstep group of ``runs`` networks of each config
    (``{name: config}``, Permuted MNIST configs), the fastest of ``repeats`` turns
    of ``steps`` examples each; the groups take their turns in rotation. On the CPU,
    seconds of processor time of this thread (one thread, as the runner trains)."""
    if not configs:
        raise ValueError("give at least one config to time")
    if runs < 1 or steps < 1 or repeats < 1:
        raise ValueError("runs, steps and repeats must be >= 1")
    device = get_device(device)
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # as the runner trains on the CPU
    torch.set_flush_denormal(True)
    try:
        groups = {name: _group(cfg, runs, device) for name, cfg in configs.items()}
        features = next(iter(groups.values())).weights[0].shape[-1]
        g = make_generator(seed)
        x = torch.rand(runs, steps, features, generator=g).to(device)
        y = torch.randint(0, 10, (runs, steps), generator=g).to(device)
        for trainer in groups.values():  # warm up: first calls allocate
            trainer.train_online(x[:, : min(steps, 20)], y[:, : min(steps, 20)])
        clock = time.thread_time if device.type == "cpu" else time.perf_counter
        best = dict.fromkeys(groups, math.inf)
        for _ in range(repeats):
            for name, trainer in groups.items():
                _sync(device)
                start = clock()
                trainer.train_online(x, y)
                _sync(device)
                best[name] = min(best[name], clock() - start)
    finally:
        torch.set_num_threads(before)
        torch.set_flush_denormal(False)
    return {name: t / steps for name, t in best.items()}


def cost_ratios(configs: dict, baseline: str | None = None, **options) -> dict:
    """Each config's time per step divided by ``baseline``'s (a name in ``configs``;
    None: the first config with plain backprop), measured by :func:`step_times`
    (``options``: its arguments). The baseline's ratio is 1."""
    if not configs:
        raise ValueError("give at least one config to time")
    if baseline is None:
        plain = [n for n, c in configs.items() if c.method == "backprop"]
        if not plain:
            raise ValueError(
                "no config trains plain backprop: name the baseline (baseline=...)"
            )
        baseline = plain[0]
    if baseline not in configs:
        raise ValueError(
            f"baseline {baseline!r} is not one of the configs: {', '.join(configs)}"
        )
    times = step_times(configs, **options)
    return {name: t / times[baseline] for name, t in times.items()}


def _group(config, runs: int, device):
    """The lockstep engine for ``runs`` seeds of ``config``."""
    if not hasattr(config, "examples_per_task") or not hasattr(config, "width"):
        raise ValueError(
            f"step_times times Permuted MNIST configs, got {type(config).__name__}"
        )
    config.validate()
    configs = [dataclasses.replace(config, seed=config.seed + i) for i in range(runs)]
    # the networks need only the number of inputs of the data
    data = Data((types.SimpleNamespace(n_features=784),), "timing")
    nets = experiment_of(type(config)).networks(configs, data)
    trainer, _ = make_trainer(configs, nets, "engine", device)
    return trainer


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
