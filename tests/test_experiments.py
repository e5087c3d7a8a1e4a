"""Tests of lopbook.experiments (the runners, their checkpoints and resumption) and lopbook.results.

Everything runs on scikit-learn's bundled 8x8 digits (``data="digits"``), which needs no download; the runners
announce that fallback with a DataWarning, expected here.
"""
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lopbook import data as datasets
from lopbook import experiments, io, runner
from lopbook.configs import run_key
from lopbook.data import DataWarning, locations
from lopbook.engine import Lockstep
from lopbook.experiments import (ContinualImageNet, PermutedMNIST, resolve_scale, run_continual_imagenet,
                                 run_permuted_mnist, runs)
from lopbook.learners import Learner
from lopbook.metrics import PlasticityMetrics
from lopbook.results import RunResult, bin_tasks, group_by_label, load_result, load_results, mean_and_stderr

pytestmark = pytest.mark.filterwarnings("ignore::lopbook.data.DataWarning")

METRIC_KEYS = ["task", *PlasticityMetrics.__dataclass_fields__]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No real data directories, no network probes, no scale/device overrides from the environment."""
    for name in ("LOPBOOK_DATA", "LOPBOOK_IMAGENET", "LOPBOOK_TINYIMAGENET", "LOPBOOK_SCALE", "LOPBOOK_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(locations, "reachable", lambda urls, timeout=0.0: False)


def mnist(**changes):
    settings = dict(tasks=4, examples_per_task=150, width=24, depth=2, step_size=0.02, metrics_every=2,
                    probe_size=100, data="digits")
    settings.update(changes)
    return PermutedMNIST(**settings)


def imagenet(**changes):
    settings = dict(tasks=3, epochs=2, batch_size=50, data="digits", metrics_every=1, probe_size=50)
    settings.update(changes)
    return ContinualImageNet(**settings)


CBP = dict(method="continual_backprop", hyperparameters=dict(replacement_rate=0.01, maturity_threshold=50))
SNP = dict(method="shrink_and_perturb", hyperparameters=dict(weight_decay=1e-3, noise_std=1e-3))


def key_dir(out_dir, cfg):
    """The directory of run ``cfg`` under ``out_dir``."""
    return runner.run_directory(cfg, out_dir)


def mnist_run(configs, **kwargs):
    kwargs.setdefault("workers", 1)          # one process: the tests of worker processes ask for them
    return run_permuted_mnist(configs, device="cpu", progress=False, **kwargs)


def imagenet_run(configs, **kwargs):
    kwargs.setdefault("workers", 1)
    return run_continual_imagenet(configs, device="cpu", progress=False, **kwargs)


def assert_identical(a: RunResult, b: RunResult):
    assert a.config == b.config
    assert np.array_equal(a.accuracy, b.accuracy)
    assert np.array_equal(a.train_accuracy, b.train_accuracy)
    assert sorted(a.metrics) == sorted(b.metrics)
    for key in a.metrics:
        assert np.array_equal(a.metrics[key], b.metrics[key]), key


class Interrupted(Exception):
    """Stands for a crash or a Ctrl-C in the middle of a run."""


def interrupt_on_call(monkeypatch, cls, name, n):
    """Make ``cls.name`` raise on its ``n``-th call (the earlier calls go through)."""
    original = getattr(cls, name)
    calls = {"n": 0}

    def wrapper(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= n:
            raise Interrupted(f"interrupted in call {calls['n']} of {name}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


def forbid_training(monkeypatch):
    """Any attempt to build or step a trainer fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("training was started")

    monkeypatch.setattr(Lockstep, "__init__", refuse)
    monkeypatch.setattr(Lockstep, "learn", refuse)
    monkeypatch.setattr(Learner, "learn", refuse)


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- engine == reference
def test_permuted_mnist_engine_matches_reference_backend():
    configs = [mnist(examples_per_task=200), mnist(examples_per_task=200, **CBP),
               mnist(examples_per_task=200, seed=1, **SNP)]
    engine = mnist_run(configs, backend="engine")
    reference = mnist_run(configs, backend="reference")
    for e, r, cfg in zip(engine, reference, configs):
        assert e.config == r.config == cfg
        assert e.meta["backend"] == "engine" and r.meta["backend"] == "reference"
        assert len(e.accuracy) == len(r.accuracy) == cfg.tasks
        # online accuracies: equal up to (at most) one prediction per task
        assert np.abs(e.accuracy - r.accuracy).max() <= 1 / cfg.examples_per_task + 1e-12
        assert list(e.metrics["task"]) == list(r.metrics["task"]) == [0, 2]
        assert np.abs(e.metrics["dead_percent"] - r.metrics["dead_percent"]).max() <= 100 / cfg.width
        np.testing.assert_allclose(e.metrics["effective_rank"], r.metrics["effective_rank"], rtol=1e-3)
        np.testing.assert_allclose(e.metrics["weight_magnitude"], r.metrics["weight_magnitude"], rtol=1e-4)
        np.testing.assert_allclose(e.metrics["weight_magnitude_total"], r.metrics["weight_magnitude_total"],
                                   rtol=1e-4)
        assert 0.0 <= e.accuracy.min() and e.accuracy.max() <= 1.0
    # the runs did learn (10 classes: chance is 0.1)
    assert all(e.accuracy[-1] > 0.3 for e in engine)
    # continual backprop replaced units: same seed, same data and initial network as the backprop run, and yet
    # its weights differ by the second measurement
    bp, cbp = engine[0], engine[1]
    assert bp.config.seed == cbp.config.seed
    assert bp.metrics["weight_magnitude_total"][0] == cbp.metrics["weight_magnitude_total"][0]
    assert bp.metrics["weight_magnitude_total"][1] != cbp.metrics["weight_magnitude_total"][1]


def test_auto_backend_uses_the_engine_where_it_can_and_the_reference_for_batch_norm():
    plain, normed = mnist_run([mnist(tasks=1, examples_per_task=50),
                               mnist(tasks=1, examples_per_task=50, norm="layer")], backend="auto")
    assert plain.meta["backend"] == "engine"
    assert normed.meta["backend"] == "engine"
    [batch_norm] = imagenet_run(imagenet(tasks=1, epochs=1, norm="batch"), backend="auto")
    assert batch_norm.meta["backend"] == "reference"
    with pytest.raises(ValueError, match="reference"):
        imagenet_run(imagenet(tasks=1, epochs=1, norm="batch"), backend="engine")


def test_layer_norm_runs_match_between_engine_and_reference():
    configs = [mnist(norm="layer"), mnist(norm="layer", seed=1, **CBP)]
    engine = mnist_run(configs, backend="engine")
    reference = mnist_run(configs, backend="reference")
    for a, b in zip(engine, reference):
        np.testing.assert_allclose(a.accuracy, b.accuracy, atol=1.5 / a.config.examples_per_task)
        np.testing.assert_allclose(a.metrics["dead_percent_total"], b.metrics["dead_percent_total"], atol=2.0)


# ----------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("settings", [CBP, dict(SNP, dropout=0.2), dict(CBP, norm="layer", dropout=0.1)],
                         ids=["cbp", "snp-dropout", "reference-backend-cbp-layer-norm"])
def test_resumed_permuted_mnist_equals_uninterrupted_run(settings, tmp_path, monkeypatch):
    configs = runs(mnist(**settings), 2)
    backend = "reference" if settings.get("norm") else "engine"
    uninterrupted = mnist_run(configs, backend=backend)
    trainer = runner.Reference if backend == "reference" else Lockstep
    assert {r.meta["backend"] for r in uninterrupted} == {backend}

    with monkeypatch.context() as m:
        calls = interrupt_on_call(m, trainer, "train_online", 3)         # one call per task: dies in task 2
        with pytest.raises(Interrupted):
            mnist_run(configs, out_dir=tmp_path, checkpoint_every=0, backend=backend)
        assert calls["n"] == 3
    for cfg in configs:
        directory = key_dir(tmp_path, cfg)
        assert (directory / "checkpoint.pt").exists()
        partial = load_result(directory)
        assert partial.tasks_done == 2 and not partial.complete

    resumed = mnist_run(configs, out_dir=tmp_path, checkpoint_every=0, backend=backend)
    for a, b in zip(resumed, uninterrupted):
        assert a.meta["resumed_from"]["task"] == 2
        assert_identical(a, b)
        assert not (key_dir(tmp_path, a.config) / "checkpoint.pt").exists()


@pytest.mark.parametrize("backend,cut", [("engine", 2), ("engine", 6), ("reference", 3)])
def test_resumed_in_the_middle_of_a_task_equals_uninterrupted_run(backend, cut, tmp_path, monkeypatch):
    """Tasks of 600 examples are trained in chunks of 250, 250 and 100, with a checkpoint after each (here:
    checkpoint_every=0): cut during chunk ``cut``, in the middle of a task, the run resumes after the chunk before
    and ends with the uninterrupted numbers."""
    configs = [mnist(examples_per_task=600, tasks=3, **CBP), mnist(examples_per_task=600, tasks=3, seed=1)]
    uninterrupted = mnist_run(configs, backend=backend)
    trainer = runner.Reference if backend == "reference" else Lockstep
    with monkeypatch.context() as m:
        interrupt_on_call(m, trainer, "train_online", cut)
        with pytest.raises(Interrupted):
            mnist_run(configs, out_dir=tmp_path, checkpoint_every=0, backend=backend)
    saved = torch.load(key_dir(tmp_path, configs[0]) / "checkpoint.pt", weights_only=True)
    assert saved["position"] is not None                       # inside a task
    assert saved["position"]["shared"]["steps"] == [250, 500][(cut - 2) % 3]
    resumed = mnist_run(configs, out_dir=tmp_path, checkpoint_every=0, backend=backend)
    for a, b in zip(resumed, uninterrupted):
        assert a.meta["resumed_from"]["task"] == (cut - 1) // 3
        assert_identical(a, b)


def test_resumed_continual_imagenet_equals_uninterrupted_run(tmp_path, monkeypatch):
    configs = [imagenet(method="continual_backprop",
                        hyperparameters=dict(replacement_rate=0.01, maturity_threshold=5))]
    uninterrupted = imagenet_run(configs)
    assert all(len(r.accuracy) == len(r.train_accuracy) == 3 for r in uninterrupted)

    with monkeypatch.context() as m:
        interrupt_on_call(m, Lockstep, "reset_head", 2)                  # called as each task starts: dies at task 1
        with pytest.raises(Interrupted):
            imagenet_run(configs, out_dir=tmp_path, checkpoint_every=0)
    for cfg in configs:
        assert load_result(key_dir(tmp_path, cfg)).tasks_done == 1

    resumed = imagenet_run(configs, out_dir=tmp_path, checkpoint_every=0)
    for a, b in zip(resumed, uninterrupted):
        assert a.meta["resumed_from"]["task"] == 1
        assert_identical(a, b)


@pytest.mark.parametrize("cut", [2, 3, 6, 7])
def test_continual_imagenet_resumed_in_the_middle_of_a_task_equals_uninterrupted_run(cut, tmp_path, monkeypatch):
    """Tasks of 3 epochs of 2 mini-batches: cut during any mini-batch (inside an epoch, at its end, in the next
    task), the run resumes after the one before, with the same shuffling of the rest of the task."""
    configs = runs(imagenet(epochs=3, batch_size=10, train_per_class=10, **CBP), 2)
    uninterrupted = imagenet_run(configs)
    with monkeypatch.context() as m:
        interrupt_on_call(m, Lockstep, "train_batch", cut)
        with pytest.raises(Interrupted):
            imagenet_run(configs, out_dir=tmp_path, checkpoint_every=0)
    saved = torch.load(key_dir(tmp_path, configs[0]) / "checkpoint.pt", weights_only=True)
    done = cut - 1                                            # mini-batches finished before the cut
    assert len(saved["accuracy"]) == done // 6
    if done % 6:
        assert saved["position"]["shared"]["steps"] == done % 6
    else:
        assert saved["position"] is None
    resumed = imagenet_run(configs, out_dir=tmp_path, checkpoint_every=0)
    for a, b in zip(resumed, uninterrupted):
        assert_identical(a, b)


def test_finished_runs_are_loaded_not_recomputed(tmp_path, monkeypatch):
    configs = [mnist(tasks=2, **CBP), mnist(tasks=2, seed=3)]
    first = mnist_run(configs, out_dir=tmp_path)
    before = snapshot(tmp_path)
    with monkeypatch.context() as m:
        forbid_training(m)
        again = mnist_run(configs, out_dir=tmp_path)
    for a, b in zip(first, again):
        assert_identical(a, b)
        assert a.meta == b.meta
    assert snapshot(tmp_path) == before                   # nothing rewritten


@pytest.mark.parametrize("crash_at", [2, 3], ids=["middle", "last-task"])
def test_interrupted_while_saving_result_still_resumes(crash_at, tmp_path, monkeypatch):
    """A crash while writing result.json (after checkpoint.pt, each atomically) must not strand the run: the
    checkpoint is intact, so calling again resumes from it and finishes with the uninterrupted numbers, leaving a
    complete, loadable result and no checkpoint."""
    cfg = mnist(tasks=3, **CBP)
    [uninterrupted] = mnist_run(cfg)
    original = io.atomic_write
    writes = {"result.json": 0}

    def crash_while_writing_result_json(path, write):
        if Path(path).name == "result.json":
            writes["result.json"] += 1
            if writes["result.json"] == crash_at:     # checkpoint.pt of this point is already in place
                raise Interrupted("crashed while writing result.json")
        return original(path, write)

    with monkeypatch.context() as m:
        m.setattr(io, "atomic_write", crash_while_writing_result_json)
        with pytest.raises(Interrupted):
            mnist_run(cfg, out_dir=tmp_path, checkpoint_every=0)
    directory = key_dir(tmp_path, cfg)
    assert (directory / "checkpoint.pt").exists()
    [resumed] = mnist_run(cfg, out_dir=tmp_path, checkpoint_every=0)
    assert_identical(resumed, uninterrupted)
    assert not (directory / "checkpoint.pt").exists()
    assert_identical(load_result(directory), uninterrupted)


# ----------------------------------------------------------------------------------------------- saved files
def test_saved_files_and_load_results(tmp_path):
    configs = [mnist(tasks=2), mnist(tasks=2, seed=1, **SNP)]
    returned = mnist_run(configs, out_dir=tmp_path)
    directories = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in directories] == sorted(key_dir(tmp_path, c).name for c in configs)
    for cfg, result in zip(configs, returned):
        directory = key_dir(tmp_path, cfg)
        assert sorted(p.name for p in directory.iterdir()) == [".lock", "result.json"]   # no checkpoint
        record = json.loads((directory / "result.json").read_text())
        assert record["experiment"] == "PermutedMNIST"
        assert record["config"] == json.loads(json.dumps(dataclasses.asdict(cfg)))
        assert record["accuracy"] == result.accuracy.tolist()
        assert record["config"]["seed"] == cfg.seed
        assert record["complete"] is True and record["tasks_done"] == cfg.tasks
        meta = record["meta"]
        assert "8x8 digits" in meta["dataset"]
        assert "NOT MNIST" in meta["dataset_warning"]
        assert meta["torch"] == torch.__version__ and meta["numpy"] == np.__version__
        assert meta["python"].count(".") == 2
        assert meta["device"] == "cpu" and meta["backend"] == "engine"
        assert meta["wall_time_s"] > 0
        assert meta["dataset_id"].startswith("digits") and len(meta["dataset_id"]) > 12
        assert sorted(record["metrics"]) == sorted(METRIC_KEYS)
    loaded = {r.config.seed: r for r in load_results(tmp_path)}
    assert len(loaded) == 2
    for result in returned:
        assert_identical(loaded[result.config.seed], result)
        assert loaded[result.config.seed].meta == result.meta


def test_permuted_mnist_result_shapes():
    result = mnist_run(mnist(tasks=3, metrics_every=2))[0]
    assert result.accuracy.shape == (3,) and result.tasks_done == 3 and result.complete
    assert list(result.metrics["task"]) == [0, 2]
    assert result.metrics["dead_percent"].shape == (2, 2)          # [measurements, hidden layers]
    assert result.metrics["weight_magnitude"].shape == (2, 3)      # [measurements, weight layers]
    assert result.metrics["effective_rank"].shape == (2, 2)
    assert (result.metrics["effective_rank"] <= 24).all()
    assert "Backprop" in repr(result) and "3/3" in repr(result)


def test_digits_fallback_is_recorded():
    with pytest.warns(DataWarning, match="NOT MNIST"):
        result = mnist_run(mnist(tasks=1, examples_per_task=20, metrics_every=0))[0]
    assert "8x8 digits" in result.meta["dataset"] and "not MNIST" in result.meta["dataset"]
    assert result.meta["dataset_warning"]
    assert result.metrics == {}                                    # metrics_every=0: never measured

    with pytest.warns(DataWarning):
        result = imagenet_run(imagenet(tasks=1, epochs=1, metrics_every=0))[0]
    assert "not ImageNet" in result.meta["dataset"]
    assert "8x8 digits" in result.meta["dataset_warning"]


# ----------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An out_dir holding one finished run."""
    out = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(locations, "reachable", lambda urls, timeout=0.0: False)
        with pytest.warns(DataWarning):
            mnist_run(mnist(tasks=2, seed=7), out_dir=out)
    return out


GOOD = mnist(tasks=2, seed=8)       # a valid, unfinished run listed before the bad one


@pytest.mark.parametrize("configs,match", [
    ([GOOD, mnist(method="adagrad")], "unknown method 'adagrad'"),
    ([GOOD, mnist(step_size=-0.01)], "step_size"),
    ([GOOD, mnist(method="l2", hyperparameters=dict(weight_decay=0.0))], "weight_decay"),
    ([GOOD, mnist(method="l2", hyperparameters=dict(replacement_rate=1e-4))], "hyperparameter of continual_backprop"),
    ([GOOD, mnist(data="nope")], "data"),
    ([GOOD, mnist(norm="batch")], "batch"),
    ([GOOD, mnist(method="continual_backprop", hyperparameters=dict(replacement_rate=2.0))], "replacement_rate"),
    ([GOOD, mnist(optimizer="adam", momentum=0.9)], "momentum"),
    ([GOOD, mnist(seed=-1)], "seed"),
    ([GOOD, mnist(width="100")], "width"),
    ([GOOD, mnist(tasks=2, seed=8)], "same run"),
    ([], "no configs"),
], ids=["method", "step_size", "l2-without-decay", "hyperparameter-of-another-method", "data", "batch-norm", "rate",
        "adam-momentum", "seed", "width-a-string", "duplicate", "empty"])
def test_bad_input_fails_before_any_work(configs, match, finished_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    before = snapshot(out)
    forbid_training(monkeypatch)
    with pytest.raises(ValueError, match=match):
        mnist_run(configs, out_dir=out)
    assert snapshot(out) == before                        # nothing written, nothing lost
    [kept] = load_results(out)
    assert kept.complete and kept.config.seed == 7


def test_configs_differing_only_in_label_are_the_same_run(tmp_path, monkeypatch):
    """A label only names a run in plots: a relabelled copy is the same run (refused as a duplicate), and a
    finished run is loaded, not redone, when asked for under another label."""
    with monkeypatch.context() as m:
        forbid_training(m)
        with pytest.raises(ValueError, match="same run"):
            mnist_run([GOOD, dataclasses.replace(GOOD, label="the same run under another name")], out_dir=tmp_path)
    first = mnist_run(GOOD, out_dir=tmp_path)[0]
    relabelled = dataclasses.replace(GOOD, label="renamed")
    with monkeypatch.context() as m:
        forbid_training(m)
        [again] = mnist_run(relabelled, out_dir=tmp_path)
    assert again.label == "renamed" and again.config == relabelled
    assert np.array_equal(again.accuracy, first.accuracy)
    assert len(list(tmp_path.iterdir())) == 1


def test_bad_backend_and_config_type(tmp_path, monkeypatch):
    forbid_training(monkeypatch)
    with pytest.raises(ValueError, match="backend"):
        mnist_run(mnist(tasks=1), backend="gpu-magic", out_dir=tmp_path)
    assert not any(tmp_path.rglob("result.json"))
    with pytest.raises(TypeError):
        mnist_run([imagenet()])
    with pytest.raises(ValueError, match="data"):
        imagenet_run(imagenet(data="nope"))
    with pytest.raises(ValueError):
        imagenet_run(imagenet(norm="layer"))


def test_a_different_run_in_the_same_directory_is_refused(tmp_path, monkeypatch):
    cfg = mnist(tasks=3)
    with monkeypatch.context() as m:
        interrupt_on_call(m, Lockstep, "train_online", 2)
        with pytest.raises(Interrupted):
            mnist_run(cfg, out_dir=tmp_path, checkpoint_every=0)
    # pretend another config was saved under this run's key
    directory = key_dir(tmp_path, cfg)
    saved = torch.load(directory / "checkpoint.pt", weights_only=True)
    saved["config"]["step_size"] = 0.5
    torch.save(saved, directory / "checkpoint.pt")
    with pytest.raises(ValueError, match="other settings.*step_size"):
        mnist_run(cfg, out_dir=tmp_path)


# ----------------------------------------------------------------------------------------------- small helpers
def test_runs_gives_n_seeds():
    cfg = mnist(step_size=0.05, **CBP)
    copies = runs(cfg, 3)
    assert [c.seed for c in copies] == [0, 1, 2]
    assert all(dataclasses.replace(c, seed=cfg.seed) == cfg for c in copies)
    assert [c.seed for c in runs(cfg, 2, first_seed=10)] == [10, 11]
    assert len({run_key(c, "data") for c in copies}) == 3
    assert runs(cfg, 0) == []


def test_resolve_scale(monkeypatch):
    assert resolve_scale("full") == "full"
    assert resolve_scale("quick") == "quick"
    monkeypatch.setenv("LOPBOOK_SCALE", "smoke")
    assert resolve_scale("full") == "smoke"
    monkeypatch.setenv("LOPBOOK_SCALE", "enormous")
    with pytest.raises(ValueError, match="scale"):
        resolve_scale("full")
    monkeypatch.delenv("LOPBOOK_SCALE")
    with pytest.raises(ValueError, match="scale"):
        resolve_scale("huge")


def test_mean_and_stderr_known_values():
    mean, stderr = mean_and_stderr([[1, 2], [3, 4]])
    assert np.allclose(mean, [2, 3]) and np.allclose(stderr, [1, 1])
    mean, stderr = mean_and_stderr([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    assert np.allclose(mean, [2, 5]) and np.allclose(stderr, [1 / np.sqrt(3), 0])
    mean, stderr = mean_and_stderr([[0.5, 0.25]])                    # one run: no spread
    assert np.allclose(mean, [0.5, 0.25]) and np.array_equal(stderr, [0, 0])


def test_bin_tasks():
    assert np.allclose(bin_tasks(np.arange(6), 2), [0.5, 2.5, 4.5])
    assert np.allclose(bin_tasks(np.arange(7), 3), [1, 4])             # the partial last bin is dropped
    assert np.allclose(bin_tasks([[0, 2, 4, 6], [1, 1, 1, 1]], 2), [[1, 5], [1, 1]])
    assert np.allclose(bin_tasks([3, 1, 2], 1), [3, 1, 2])
    with pytest.raises(ValueError):
        bin_tasks(np.arange(3), 5)


def test_group_by_label_and_labels():
    results = [RunResult(mnist(seed=s, **cfg), np.zeros(1)) for s, cfg in
               [(0, {}), (0, CBP), (1, {}), (0, dict(optimizer="adam", step_size=1e-3)), (1, CBP),
                (2, dict(label="mine"))]]
    groups = group_by_label(results)
    assert list(groups) == ["Backprop", "Continual backprop", "Adam", "mine"]
    assert [r.config.seed for r in groups["Backprop"]] == [0, 1]
    assert [r.config.seed for r in groups["Continual backprop"]] == [0, 1]
    assert mnist(dropout=0.1, **SNP).name == "Shrink and Perturb, dropout 0.1"
    assert mnist(norm="layer", method="l2", hyperparameters=dict(weight_decay=1e-3)).name == "L2, layer norm"


# ----------------------------------------------------------------------------------------------- linear baseline
def _imagenet_classes(path, levels, rng):
    """ImageNet32 class files (700 images, channel-last uint8); class c's pixels are uniform in ``levels[c]``."""
    path.mkdir()
    for c, (low, high) in enumerate(levels):
        np.save(path / f"{c}.npy", rng.integers(low, high, size=(700, 32, 32, 3), dtype=np.uint8))
    return datasets.ImageNet32(path)


def test_linear_baseline_separates_separable_classes_and_not_identical_ones(tmp_path):
    rng = np.random.default_rng(0)
    separable = _imagenet_classes(tmp_path / "a", [(0, 60), (65, 125), (130, 190), (195, 256)], rng)
    accuracy = experiments.linear_baseline(separable, tasks=5, train_per_class=20, test_per_class=50, seed=3)
    assert accuracy.tolist() == [1.0, 1.0]                 # two class pairs, both linearly separable
    same = _imagenet_classes(tmp_path / "b", [(0, 256)] * 2, rng)
    chance = experiments.linear_baseline(same, tasks=1, train_per_class=100)
    assert chance.shape == (1,) and 0.35 < chance[0] < 0.65   # indistinguishable classes: about chance (200 test images)
    with pytest.raises(ValueError, match="train_per_class=601"):
        experiments.linear_baseline(same, tasks=1, train_per_class=601)


# ----------------------------------------------------------------------------------------------- the headline
@pytest.mark.slow
def test_headline_backprop_loses_plasticity_continual_backprop_keeps_it():
    """Online Permuted MNIST (on the 8x8 digits): backprop's online accuracy falls from its best while continual
    backprop's holds (Dohare et al., 2024, Fig. 1 at toy scale)."""
    common = dict(width=100, depth=3, step_size=0.03, examples_per_task=2000, tasks=25, metrics_every=0,
                  data="digits")
    configs = runs(PermutedMNIST(**common), 2) + runs(
        PermutedMNIST(**common).with_method("continual_backprop", replacement_rate=1e-3), 2)
    results = mnist_run(configs)
    accuracy = {name: np.array([r.accuracy for r in rs]).mean(axis=0)
                for name, rs in group_by_label(results).items()}
    bp, cbp = accuracy["Backprop"], accuracy["Continual backprop"]

    def best_window(a, size=5):
        return np.convolve(a, np.ones(size) / size, mode="valid").max()

    assert best_window(bp) > 0.7 and best_window(cbp) > 0.7           # both learn the tasks well at first
    assert bp[-5:].mean() < best_window(bp) - 0.05                     # backprop loses plasticity
    assert cbp[-5:].mean() > best_window(cbp) - 0.03                   # continual backprop keeps it
    assert cbp[-5:].mean() > bp[-5:].mean()


# ----------------------------------------------------------------------------------------------- parallel groups
def test_groups_trained_side_by_side_give_the_same_numbers_as_one_after_the_other():
    """Independent groups (here: three architectures) run in worker processes; each run's numbers do not depend
    on whether, or with what, it ran in parallel."""
    configs = [mnist(), mnist(dropout=0.1, **CBP), mnist(norm="layer", seed=1, **SNP)]
    alone = mnist_run(configs, workers=1)
    together = mnist_run(configs, workers=3)
    for a, b in zip(alone, together):
        assert_identical(a, b)


def test_groups_in_worker_processes_save_their_runs(tmp_path):
    """Groups trained in worker processes write their results like the parent would; a second call loads them."""
    configs = [mnist(tasks=2), mnist(tasks=2, dropout=0.1)]
    first = mnist_run(configs, out_dir=tmp_path, workers=2)
    for cfg in configs:
        assert load_result(key_dir(tmp_path, cfg)).complete
    again = mnist_run(configs, out_dir=tmp_path, workers=2)
    for a, b in zip(first, again):
        assert_identical(a, b)


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers"):
        mnist_run(mnist(), workers=0)


def test_adding_a_config_field_with_a_default_keeps_every_run_key():
    """Run keys hash only what differs from the defaults: a new field with a default (here added by a subclass of
    the same name) leaves the keys of existing runs, and so their saved results, as they were."""
    Extended = dataclasses.make_dataclass("PermutedMNIST", [("new_knob", int, 0)], bases=(PermutedMNIST,))
    for cfg in [mnist(), mnist(seed=3, **CBP), mnist(optimizer="adam", step_size=1e-3)]:
        extended = Extended(**dataclasses.asdict(cfg))
        assert run_key(extended, "data") == run_key(cfg, "data")
        assert run_key(dataclasses.replace(extended, new_knob=1), "data") != run_key(cfg, "data")
    # and method hyperparameters at their defaults do not count either
    assert run_key(mnist(method="continual_backprop"), "d") == run_key(
        mnist(method="continual_backprop", hyperparameters=dict(replacement_rate=1e-4)), "d")
    assert run_key(mnist(), "one data set") != run_key(mnist(), "another data set")


def test_a_group_split_over_the_workers_gives_the_same_numbers():
    """One lockstep group of four runs and two workers: the group is split in two, one per core, and every run's
    numbers are those of the four runs trained together."""
    configs = runs(mnist(tasks=2, **CBP), 2) + runs(mnist(tasks=2, seed=5), 2)
    jobs = [(list(range(4)), [runner.Run(c, str(i), None, {}) for i, c in enumerate(configs)], None)]
    halves = runner.split_jobs(jobs, 2, experiments.EXPERIMENTS["PermutedMNIST"])
    assert len(halves) >= 2 and sorted(i for j in halves for i in j[0]) == [0, 1, 2, 3]
    together = mnist_run(configs, workers=1)
    split = mnist_run(configs, workers=2)
    for a, b in zip(together, split):
        assert_identical(a, b)


def test_a_group_bigger_than_a_workers_share_is_split_and_the_costliest_go_first():
    """Two workers, a group of eight runs and one of a single run: the big group is split
    (it alone is more than half the work), and the jobs are handed out costliest first;
    with one worker nothing is split."""
    big = [runner.Run(c, f"b{i}", None, {}) for i, c in enumerate(runs(mnist(tasks=4), 8))]
    small = [runner.Run(mnist(tasks=4, width=9), "s", None, {})]
    jobs = [(list(range(8)), big, None), ([8], small, None)]
    split = runner.split_jobs(jobs, 2, experiments.EXPERIMENTS["PermutedMNIST"])
    assert [j[0] for j in split] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert runner.split_jobs(jobs, 1, experiments.EXPERIMENTS["PermutedMNIST"]) == jobs
