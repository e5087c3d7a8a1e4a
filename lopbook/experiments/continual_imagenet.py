"""Continual ImageNet: binary tasks on pairs of classes, the output layer reset at every
task, many epochs per task; the measure is test accuracy after each task."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .. import data as datasets
from ..configs import ContinualImageNet
from ..nets import ConvNet
from ..runner import Data
from ..runtime import derive_seed, make_generator
from .common import describe_runs, record_metrics, warn_fallback

__all__ = [
    "load_data",
    "networks",
    "steps_per_task",
    "task",
    "describe",
    "linear_baseline",
]

config = ContinualImageNet


def load_data(cfg: ContinualImageNet, device, data_dir=None) -> Data:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", datasets.DataWarning)
        source = datasets.class_images(cfg.data, root=data_dir)
    warn_fallback(source.warning)
    meta = {
        "dataset": source.name,
        "dataset_id": source.identity,
        "dataset_warning": source.warning,
    }
    return Data(source, source.identity, meta)


def networks(configs, data: Data) -> list[ConvNet]:
    return [ConvNet(3, 2, c.dropout, c.norm, seed=c.seed, init=c.init) for c in configs]


def images_per_task(cfg: ContinualImageNet, source) -> tuple[int, int]:
    """Training and test images of one task (two classes)."""
    train, test = task_subsets(source, cfg.train_per_class, cfg.test_per_class)
    return len(train), len(test)


def steps_per_task(cfg: ContinualImageNet, data: Data) -> int:
    n_train, _ = images_per_task(cfg, data.content)
    return cfg.epochs * math.ceil(n_train / cfg.batch_size)


def describe(runs, data: Data) -> str:
    return f"Continual ImageNet ({data.meta['dataset']}): {describe_runs(runs)}"


def task_subsets(source, train_per_class: int, test_per_class: int):
    """Indices of the training and test images a task uses: the first ``k`` of each of
    its two classes (``k = 0``: all of them)."""
    keep = []
    for name, k in (
        ("train_per_class", train_per_class),
        ("test_per_class", test_per_class),
    ):
        per_class = getattr(source, name)
        if not 0 <= k <= per_class:
            raise ValueError(
                f"{name}={k} but {source.name} has {per_class} images per class"
            )
        k = k or per_class
        keep.append(torch.cat([torch.arange(k), per_class + torch.arange(k)]))
    return keep[0], keep[1]


def task(group, t: int):
    """Train the group's runs on task ``t``, yielding 1 after every mini-batch."""
    cfg, trainer, device = group.config, group.trainer, group.device
    source = group.data.content
    if "streams" not in group.cache:
        group.cache["streams"] = [
            datasets.BinaryTaskStream(source, run.config.seed, cfg.pairing)
            for run in group.runs
        ]
        group.cache["keep"] = task_subsets(
            source, cfg.train_per_class, cfg.test_per_class
        )
    streams, (keep_train, keep_test) = group.cache["streams"], group.cache["keep"]
    R = len(group.runs)
    rows = torch.arange(R, device=device)[:, None]
    parts = [s.task(t) for s in streams]
    x_train, y_train, x_test, y_test = (
        torch.stack([p[i][keep] for p in parts]).to(device)
        for i, keep in enumerate((keep_train, keep_train, keep_test, keep_test))
    )
    n = x_train.shape[1]
    batches = math.ceil(n / cfg.batch_size)

    if group.position is None:  # the start of the task
        trainer.reset_head()
        if cfg.metrics_every and t % cfg.metrics_every == 0:
            record_metrics(group, t, x_train[:, : cfg.probe_size])
        shufflers = [
            make_generator(derive_seed(run.config.seed, 2, t)) for run in group.runs
        ]
        first_epoch, first_batch, order, correct = 0, 0, None, None
    else:  # resumed inside the task
        shared, per_run = group.position["shared"], group.position["runs"]
        first_epoch, first_batch = shared["epoch"], shared["batch"]
        shufflers = [make_generator(0) for _ in group.runs]
        for g, state in zip(shufflers, per_run["shuffler"]):
            g.set_state(torch.as_tensor(state))
        order = torch.stack([torch.as_tensor(o) for o in per_run["order"]]).to(device)
        correct = torch.stack([torch.as_tensor(c) for c in per_run["correct"]]).to(
            device
        )
    for epoch in range(first_epoch, cfg.epochs):
        if order is None:  # a new epoch: a new order
            order = torch.stack([torch.randperm(n, generator=g) for g in shufflers]).to(
                device
            )
            correct = torch.zeros(R, dtype=torch.long, device=device)
        states = [g.get_state() for g in shufflers]  # what comes after this order
        for k in range(first_batch, batches):
            idx = order[:, k * cfg.batch_size : (k + 1) * cfg.batch_size]
            correct += trainer.train_batch(x_train[rows, idx], y_train[rows, idx])
            # (batch == batches: the epoch is over; resuming there starts the next one)
            group.position = {
                "shared": {
                    "epoch": epoch,
                    "batch": k + 1,
                    "steps": epoch * batches + k + 1,
                },
                "runs": {"order": order, "correct": correct, "shuffler": states},
            }
            yield 1
        first_batch = 0
        if epoch + 1 < cfg.epochs:
            order = None
    test = trainer.evaluate(x_test, y_test)
    for run, c, e in zip(
        group.runs,
        (correct.double() / n).tolist(),
        (test.double() / x_test.shape[1]).tolist(),
    ):
        run.train_accuracy.append(c)
        run.accuracy.append(e)


def linear_baseline(
    source,
    tasks: int,
    train_per_class: int = 0,
    test_per_class: int = 0,
    seed: int = 0,
    max_iter: int = 2000,
    pairing: str = "order",
) -> np.ndarray:
    """Test accuracy of a logistic regression on the raw pixels, fitted from scratch on
    each of the first ``tasks`` class pairs of the run with this ``seed`` (the same
    pairs and images its network sees): what a network without hidden layers achieves,
    the paper's yardstick. ``source``: a :func:`lopbook.data.class_images` data set."""
    from sklearn.linear_model import LogisticRegression

    keep_train, keep_test = task_subsets(source, train_per_class, test_per_class)
    stream = datasets.BinaryTaskStream(source, seed, pairing)
    accuracy = []
    distinct = stream.n_pairs if pairing == "order" else tasks  # the order repeats
    for t in range(min(tasks, distinct)):
        x_train, y_train, x_test, y_test = stream.task(t)
        model = LogisticRegression(max_iter=max_iter)
        model.fit(x_train[keep_train].flatten(1).numpy(), y_train[keep_train].numpy())
        accuracy.append(
            model.score(x_test[keep_test].flatten(1).numpy(), y_test[keep_test].numpy())
        )
    return np.array(accuracy)
