"""Slowly-changing regression: track a fixed random network whose input changes slowly,
learning online by SGD on the squared error; the measure is the online squared error."""

from __future__ import annotations

import torch

from .. import data as datasets
from ..configs import SlowlyChangingRegression
from ..nets import MLP
from ..runner import Data
from .common import describe_runs, record_metrics

__all__ = ["load_data", "networks", "steps_per_task", "task", "describe"]

config = SlowlyChangingRegression
CHUNK = 1000  # examples per call of the trainer (and checkpoint granularity)


def stream(cfg: SlowlyChangingRegression, seed: int):
    """The problem of run ``seed``: its own target network and input stream."""
    return datasets.SlowlyChangingRegression(
        seed,
        n_inputs=cfg.n_inputs,
        n_slow=cfg.n_slow,
        hidden=cfg.target_width,
        beta=cfg.beta,
        change_every=cfg.change_every,
        change=cfg.change,
    )


def load_data(cfg: SlowlyChangingRegression, device, data_dir=None) -> Data:
    example = stream(cfg, 0)  # the problem's description and identity (not its seed)
    meta = {
        "dataset": example.name,
        "dataset_id": example.identity,
        "dataset_warning": None,
        "measure": "online squared error",
    }
    return Data(example.n_features, example.identity, meta)


def networks(configs, data: Data) -> list[MLP]:
    return [
        MLP(
            data.content,
            c.width,
            c.depth,
            1,
            c.dropout,
            c.norm,
            seed=c.seed,
            init=c.init,
            activation=c.activation,
        )
        for c in configs
    ]


def steps_per_task(cfg: SlowlyChangingRegression, data: Data) -> int:
    return cfg.examples_per_task


def describe(runs, data: Data) -> str:
    activation = runs[0].config.activation
    return f"Slowly-changing regression ({activation}): {describe_runs(runs)}"


def task(group, t: int):
    """Train the group's runs on bin ``t`` of their streams, yielding the number of
    steps taken after every chunk of examples."""
    cfg, trainer, device = group.config, group.trainer, group.device
    if "streams" not in group.cache:
        group.cache["streams"] = [stream(cfg, run.config.seed) for run in group.runs]
    streams = group.cache["streams"]
    first = t * cfg.examples_per_task

    def examples(a, b):
        parts = [s.examples(first + a, b - a) for s in streams]
        x = torch.stack([x for x, _ in parts]).to(device)
        return x, torch.stack([y for _, y in parts]).to(device)

    if group.position is None:  # the start of the bin
        if cfg.metrics_every and t % cfg.metrics_every == 0 and cfg.depth:
            probe = examples(0, min(cfg.probe_size, cfg.examples_per_task))[0]
            record_metrics(group, t, probe)
        done = 0
        errors = torch.zeros(len(group.runs), dtype=torch.float64, device=device)
    else:  # resumed inside the bin
        done = group.position["shared"]["steps"]
        errors = torch.stack(
            [torch.as_tensor(e) for e in group.position["runs"]["errors"]]
        )
        errors = errors.to(device)
    for a in range(done, cfg.examples_per_task, CHUNK):
        b = min(a + CHUNK, cfg.examples_per_task)
        errors += trainer.train_online(*examples(a, b)).double()
        group.position = {"shared": {"steps": b}, "runs": {"errors": errors}}
        yield b - a
    for run, e in zip(group.runs, (errors / cfg.examples_per_task).tolist()):
        run.accuracy.append(e)
