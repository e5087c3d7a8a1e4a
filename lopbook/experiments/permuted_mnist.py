"""Online Permuted MNIST: every task is MNIST with a new permutation of the pixels,
learned one example at a time; the measure is online accuracy."""

from __future__ import annotations

import warnings

import torch

from .. import data as datasets
from ..configs import PermutedMNIST
from ..nets import MLP
from ..runner import Data
from .common import describe_runs, record_metrics, warn_fallback

__all__ = ["load_data", "networks", "steps_per_task", "task", "describe"]

config = PermutedMNIST
CHUNK = 250  # examples gathered per call of the trainer (and checkpoint granularity)


def load_data(cfg: PermutedMNIST, device, data_dir=None) -> Data:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", datasets.DataWarning)  # warned once, below
        if cfg.data == "digits":
            dataset = datasets.load_digits_fallback()
        else:
            dataset = datasets.mnist_or_digits(data_dir, split=cfg.data)
    warn_fallback(dataset.warning)
    meta = {
        "dataset": dataset.name,
        "dataset_id": dataset.identity,
        "dataset_warning": dataset.warning,
    }
    return Data(
        (dataset, dataset.x.to(device), dataset.y.to(device)), dataset.identity, meta
    )


def networks(configs, data: Data) -> list[MLP]:
    dataset = data.content[0]
    return [
        MLP(
            dataset.n_features,
            c.width,
            c.depth,
            10,
            c.dropout,
            c.norm,
            seed=c.seed,
            init=c.init,
        )
        for c in configs
    ]


def steps_per_task(cfg: PermutedMNIST, data: Data) -> int:
    return cfg.examples_per_task


def relative_step_cost(cfg: PermutedMNIST) -> float:
    """A step's cost relative to the book's width-100 network: its weights' count."""
    def weights(width):
        return 784 * width + (cfg.depth - 1) * width * width + 10 * width

    return weights(cfg.width) / weights(100)


def describe(runs, data: Data) -> str:
    return f"Permuted MNIST: {describe_runs(runs)}"


def task(group, t: int):
    """Train the group's runs on task ``t``, yielding the number of steps taken after
    every chunk of examples (where a checkpoint may be made)."""
    cfg, trainer, device = group.config, group.trainer, group.device
    dataset, x_all, y_all = group.data.content
    if "streams" not in group.cache:
        group.cache["streams"] = [
            datasets.PermutedMNISTStream(
                dataset, run.config.seed, cfg.examples_per_task
            )
            for run in group.runs
        ]
    streams = group.cache["streams"]
    perm = torch.stack([s.permutation(t) for s in streams]).to(device)
    order = torch.stack([s.order(t) for s in streams]).to(device)

    def examples(rows):
        x = x_all[rows]  # [R, chunk, D], then permuted
        return torch.gather(
            x, 2, perm[:, None, :].expand(-1, rows.shape[1], -1)
        ), y_all[rows]

    if group.position is None:  # the start of the task
        if cfg.metrics_every and t % cfg.metrics_every == 0:
            record_metrics(group, t, examples(order[:, : cfg.probe_size])[0])
        done, correct = 0, torch.zeros(len(group.runs), dtype=torch.long, device=device)
    else:  # resumed inside the task
        done = group.position["shared"]["steps"]
        correct = torch.stack(
            [torch.as_tensor(c) for c in group.position["runs"]["correct"]]
        )
        correct = correct.to(device)
    for a in range(done, cfg.examples_per_task, CHUNK):
        b = min(a + CHUNK, cfg.examples_per_task)
        correct += trainer.train_online(*examples(order[:, a:b]))
        group.position = {"shared": {"steps": b}, "runs": {"correct": correct}}
        yield b - a
    for run, c in zip(group.runs, (correct.double() / cfg.examples_per_task).tolist()):
        run.accuracy.append(c)
