"""Crash safety of saved runs: processes killed at any moment, two processes on one
out_dir, and result or checkpoint files that were cut short or edited by hand.

The crash tests train in child processes. This file is also their script: ``python
tests/test_crash_safety.py zygote`` imports torch, scikit-learn and lopbook once and
forks one child per request, a fresh process (nothing of any run in memory) that starts
in milliseconds. A child runs CONFIGS on an out_dir with a checkpoint at every chunk,
makes every write of ``result.json`` and ``checkpoint.pt`` slow (in pieces, with
pauses), and can halt at a chosen point (inside the n-th write of a file, part of its
bytes written; right after a file was moved into place; before taking a run's lock)
until the test kills it (SIGKILL) or lets it go on. It reports what it writes and reads,
one event a line, in a file the test reads.

Every wait is bounded (TIMEOUT): a child that does not answer in time fails the test,
a halted child that nobody kills ends itself, and every child is killed when its test
ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import lopbook
from lopbook import runner
from lopbook.configs import config_from_dict
from lopbook.data import locations
from lopbook.engine import Lockstep
from lopbook.experiments import PermutedMNIST, run_permuted_mnist
from lopbook.learners import Learner
from lopbook.results import load_result, load_results

pytestmark = pytest.mark.filterwarnings("ignore::lopbook.data.DataWarning")

TIMEOUT = 60  # seconds: the longest any single wait on a child may take
PAUSE = 0.001  # seconds between the pieces of a slow write in the child
SEED = 20261201  # of the kill schedule

CBP = dict(
    method="continual_backprop",
    hyperparameters=dict(replacement_rate=0.01, maturity_threshold=50),
)


def mnist(**changes):
    settings = dict(
        tasks=5,
        examples_per_task=600,  # chunks of 250, 250 and 100: a checkpoint after each
        width=16,
        depth=2,
        step_size=0.02,
        metrics_every=2,
        probe_size=100,
        data="digits",
    )
    settings.update(changes)
    return PermutedMNIST(**settings)


# one lockstep group of two runs
CONFIGS = [mnist(seed=0), mnist(seed=1, **CBP)]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    for name in ("LOPBOOK_DATA", "LOPBOOK_SCALE", "LOPBOOK_DEVICE", "LOPBOOK_RESULTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(locations, "reachable", lambda urls, timeout=0.0: False)


def mnist_run(configs, **kwargs):
    kwargs.setdefault("workers", 1)
    return run_permuted_mnist(configs, device="cpu", progress=False, **kwargs)


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted runs of CONFIGS (nothing saved)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(locations, "reachable", lambda urls, timeout=0.0: False)
        return mnist_run(CONFIGS)


def assert_identical(a, b):
    assert a.config == b.config
    assert np.array_equal(a.accuracy, b.accuracy)
    assert np.array_equal(a.train_accuracy, b.train_accuracy)
    assert sorted(a.metrics) == sorted(b.metrics)
    for key in a.metrics:
        assert np.array_equal(a.metrics[key], b.metrics[key]), key


def forbid_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training was started")

    monkeypatch.setattr(Lockstep, "__init__", refuse)
    monkeypatch.setattr(Lockstep, "learn", refuse)
    monkeypatch.setattr(Learner, "learn", refuse)


def snapshot(directory: Path) -> dict:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def assert_saved_equal_reference(out_dir, reference, monkeypatch):
    """The runs saved in ``out_dir`` are complete, hold the reference's numbers, and a
    new call loads them without training."""
    for result in reference:
        directory = runner.run_directory(result.config, out_dir)
        assert not (directory / "checkpoint.pt").exists()
        saved = load_result(directory)
        assert saved.complete
        assert_identical(saved, result)
    with monkeypatch.context() as m:
        forbid_training(m)
        loaded = mnist_run(CONFIGS, out_dir=out_dir)
    for a, b in zip(loaded, reference):
        assert_identical(a, b)


# ------------------------------------------------------------------------ the children
# A "zygote" process imports torch, scikit-learn and lopbook once; every child is a
# fork of it, a fresh process (nothing of any run in memory) that starts in
# milliseconds instead of seconds. Children report events, one a line, in a file.
def zygote_main() -> None:
    """Read one spec a line from stdin; fork a child for each; say its pid."""
    import traceback
    import warnings

    from sklearn.datasets import load_digits

    from lopbook.data import DataWarning

    warnings.simplefilter("ignore", DataWarning)
    load_digits()
    # what a run imports on its way (no tensor work here, so forks are safe)
    import lopbook.engine  # noqa: F401
    from lopbook.runtime import environment

    environment("cpu")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped at once
    print("ready", flush=True)
    for line in sys.stdin:
        spec = json.loads(line)
        pid = os.fork()
        if pid == 0:
            status = 1
            with open(spec["stderr"], "w") as stderr, open(os.devnull) as nothing:
                os.dup2(nothing.fileno(), 0)  # the specs are the zygote's
                os.dup2(stderr.fileno(), 1)  # the zygote's stdout says its pids
                os.dup2(stderr.fileno(), 2)
            try:
                child_main(spec)
                status = 0
            except BaseException:  # noqa: BLE001 - reported, as Python would
                traceback.print_exc()
            finally:
                with open(spec["events"], "a") as events:
                    events.write(f"exit {status}\n")
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        print("forked", pid, flush=True)


def child_main(spec: dict) -> None:
    """Run CONFIGS on spec["out_dir"] (see the module's docstring)."""
    import lopbook.io as lio

    stop = spec.get("stop") or {}
    release = Path(spec["release"])
    counts: Counter = Counter()
    log = open(spec["events"], "a")

    def emit(*words):
        log.write(" ".join(str(w) for w in words) + "\n")
        log.flush()

    def halt(what):
        emit("stopped", what)
        deadline = time.monotonic() + TIMEOUT
        while not release.exists():
            if time.monotonic() > deadline:  # nobody came: never outlive the test
                os._exit(9)
            time.sleep(0.002)
        emit("released", what)

    def stops_at(at, name, n, complete):
        if stop.get("at") != at or stop.get("name") != name:
            return False
        return complete if stop.get("complete") else stop.get("nth") == n

    real_write = lio.atomic_write

    def slow_atomic_write(path, write):
        name = Path(path).name
        counts[name] += 1
        n, seen = counts[name], {}

        def slow_write(tmp):
            write(tmp)
            data = Path(tmp).read_bytes()
            seen["complete"] = name == "result.json" and json.loads(data)["complete"]
            emit("begin", name, n, int(seen["complete"]), tmp)
            cut = None
            if stops_at("write", name, n, seen["complete"]):
                cut = int(len(data) * stop["fraction"])
            with open(tmp, "wb") as handle:
                step = max(1, len(data) // 4)
                for i in range(0, len(data), step):
                    piece = data[i : i + step]
                    if cut is not None and i <= cut < i + step:
                        handle.write(piece[: cut - i])
                        handle.flush()
                        halt(f"write {name} {n} at byte {cut} of {len(data)}")
                        piece = piece[cut - i :]
                    handle.write(piece)
                    handle.flush()
                    time.sleep(PAUSE)

        real_write(path, slow_write)
        emit("moved", name, n, int(seen["complete"]))
        if stops_at("moved", name, n, seen["complete"]):
            halt(f"moved {name} {n}")

    lio.atomic_write = slow_atomic_write  # results.save_result, through write_text
    runner.atomic_write = slow_atomic_write  # the runner's checkpoints

    real_locked = runner.locked

    @contextlib.contextmanager
    def locked_later(directory):
        if stop.get("at") == "lock" and not counts["lock"]:
            counts["lock"] += 1
            halt(f"lock {directory}")
        with real_locked(directory):
            yield

    runner.locked = locked_later

    real_torch_load, real_load_result = torch.load, runner.load_result

    def reading_torch_load(path, *args, **kwargs):
        emit("read", path)
        return real_torch_load(path, *args, **kwargs)

    def reading_load_result(directory):
        emit("read", Path(directory) / "result.json")
        return real_load_result(directory)

    torch.load, runner.load_result = reading_torch_load, reading_load_result

    configs = [config_from_dict("PermutedMNIST", c) for c in spec["configs"]]
    emit("started")
    results = mnist_run(configs, out_dir=spec["out_dir"], checkpoint_every=0)
    emit("done", json.dumps([r.meta.get("resumed_from") for r in results]))


class Zygote:
    def __init__(self, folder: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOPBOOK_")}
        env.update(XDG_CACHE_HOME=str(folder / "cache"), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=folder,
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = False  # it imports meanwhile: waited for at the first fork

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put("")

    def _next(self) -> str:
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the zygote process did not answer in {TIMEOUT} s")
        assert line, f"the zygote process ended (exit {self.proc.poll()})"
        return line

    def fork(self, spec: dict) -> int:
        if not self.ready:
            assert self._next() == "ready"
            self.ready = True
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        word, pid = self._next().split()
        assert word == "forked"
        return int(pid)

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Child:
    """A child process running CONFIGS on ``out_dir``, and its events."""

    def __init__(self, zygote: Zygote, tmp_path: Path, out_dir: Path, name: str, stop):
        self.name = name
        self.release = tmp_path / f"{name}.release"
        self.events_path = tmp_path / f"{name}.events"
        self.stderr_path = tmp_path / f"{name}.stderr"
        self.events_path.touch()
        self.events: list[list[str]] = []
        self._seen = 0
        self.status: int | None = None
        self.pid = zygote.fork(
            dict(
                out_dir=str(out_dir),
                release=str(self.release),
                events=str(self.events_path),
                stderr=str(self.stderr_path),
                stop=stop,
                configs=[dataclasses.asdict(c) for c in CONFIGS],
            )
        )

    def _poll(self) -> list[list[str]]:
        """Events written since the last poll (whole lines only)."""
        text = self.events_path.read_text()
        end = text.rfind("\n", self._seen) + 1
        new = [line.split(maxsplit=4) for line in text[self._seen : end].splitlines()]
        self._seen = max(self._seen, end)
        for event in new:
            if event[0] == "exit":
                self.status = int(event[1])
        self.events += new
        return new

    def expect(self, word: str, *fields: str) -> list[str]:
        """Wait for the child's next event ``word`` (with these first fields)."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            was_alive = alive(self.pid)
            for event in self._poll():
                if event[0] == word and tuple(event[1 : 1 + len(fields)]) == fields:
                    return event
            if self.status is not None or not was_alive:
                pytest.fail(
                    f"{self.name} ended (exit {self.status}) before {word!r}:\n"
                    f"{self.stderr()}"
                )
            time.sleep(0.002)
        pytest.fail(f"{self.name}: no {word!r} in {TIMEOUT} s; {self.events}")

    def let_go(self):
        self.release.touch()

    def _wait_gone(self):
        deadline = time.monotonic() + TIMEOUT
        while alive(self.pid):
            assert time.monotonic() < deadline, f"{self.name} did not end"
            time.sleep(0.002)
        self._poll()

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
        self._wait_gone()
        assert self.status is None  # it did not end by itself before

    def finish(self) -> int:
        """Wait for the child to end by itself; its exit status."""
        self.expect("exit")
        self._wait_gone()
        return self.status

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def wrote(self) -> bool:
        return any(e[0] == "begin" for e in self.events)

    def reads(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "read"]


@pytest.fixture
def spawn(zygote, tmp_path):
    """Start children of one test; any still running when it ends are killed."""
    children = []

    def make(name, stop=None):
        children.append(Child(zygote, tmp_path, tmp_path / "out", name, stop))
        return children[-1]

    yield make
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)


def assert_nothing_torn(out_dir: Path) -> None:
    """Every result.json and checkpoint.pt in out_dir reads whole."""
    for path in out_dir.glob("*/result.json"):
        assert load_result(path.parent).tasks_done >= 0
    for path in out_dir.glob("*/checkpoint.pt"):
        assert "state" in torch.load(path, map_location="cpu", weights_only=True)


def progress(out_dir: Path) -> list[tuple]:
    """Per run directory: (tasks, steps into the next task) saved, the furthest of its
    checkpoint and its result."""
    found = []
    for directory in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        best = (0, 0)
        if (directory / "result.json").exists():
            best = (load_result(directory).tasks_done, 0)
        if (directory / "checkpoint.pt").exists():
            saved = torch.load(directory / "checkpoint.pt", weights_only=True)
            position = saved["position"]
            steps = position["shared"]["steps"] if position else 0
            best = max(best, (len(saved["accuracy"]), steps))
        found.append(best)
    return found


def torn(path: Path) -> bool:
    """Whether the (temporary) file at ``path`` cannot be read whole."""
    try:
        if ".result.json." in path.name:
            json.loads(path.read_bytes())
        else:
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure to read is a torn file
        return True
    return False


# ------------------------------------------------------------------------ SIGKILL
def kill_schedule(rng: random.Random) -> list[dict]:
    """Where each child is killed: inside writes (part of the bytes written), right
    after a file is moved into place, and at random moments after random events."""

    def fraction():
        return round(rng.uniform(0.05, 0.95), 3)

    def at_random(word, name):
        return dict(
            after=[word, name, str(rng.randint(1, 3))],
            delay=round(rng.uniform(0.0, 0.15), 3),
        )

    return [
        dict(
            at="write", name="checkpoint.pt", nth=rng.randint(1, 3), fraction=fraction()
        ),
        at_random("moved", "result.json"),
        dict(at="moved", name="checkpoint.pt", nth=rng.randint(1, 3)),
        dict(
            at="write", name="result.json", nth=rng.randint(1, 3), fraction=fraction()
        ),
        at_random("begin", "checkpoint.pt"),
        at_random("moved", "checkpoint.pt"),
        # the final save: the complete result.json, then the checkpoint is removed
        dict(at="write", name="result.json", complete=True, fraction=fraction()),
        dict(at="moved", name="result.json", complete=True),
    ]


def test_killed_at_random_moments_then_resumed_equals_uninterrupted_run(
    spawn, tmp_path, reference, monkeypatch
):
    """Eight processes in a row are killed (SIGKILL) where kill_schedule says, each
    resuming what the one before left; a ninth finishes. No process reads a torn file,
    and the saved runs hold the numbers of an uninterrupted run, bit for bit."""
    out = tmp_path / "out"
    schedule = kill_schedule(random.Random(SEED))
    children, before, landed = [], [], []
    for k, plan in enumerate(schedule):
        child = spawn(f"child{k}", plan if "at" in plan else None)
        children.append(child)
        if "at" in plan:
            child.expect("stopped")
        else:
            child.expect(*plan["after"])
            time.sleep(plan["delay"])
        child.kill()
        landed.append(" ".join(child.events[-1][:3]))
        assert_nothing_torn(out)
        # inside a write, the kill leaves a torn temporary file beside the whole ones
        if plan.get("at") == "write":
            leftovers = list(out.glob(f"*/.{plan['name']}.{child.pid}.tmp"))
            assert len(leftovers) == 1 and torn(leftovers[0]), leftovers
        now = progress(out)
        assert all(a >= b for a, b in zip(now, before))  # never set back
        before = now
    print("the kills came after:", landed)

    final = spawn("final")
    assert final.finish() == 0, final.stderr()
    children.append(final)
    assert final.events[-2][0] == "done"
    for child in children:  # no process ever read a temporary (torn) file
        for path in child.reads():
            assert Path(path).name in ("result.json", "checkpoint.pt"), path
    resumed = [
        c for c in children if any(Path(p).name == "checkpoint.pt" for p in c.reads())
    ]
    # all but the first two (killed in the first checkpoint write) resumed
    assert len(resumed) >= len(schedule) - 1
    assert_saved_equal_reference(out, reference, monkeypatch)
    assert not list(out.rglob("*.tmp"))  # no torn leftovers once the runs are done


# ------------------------------------------------------------------------ two processes
def assert_clear_lock_error(child: Child) -> None:
    last = child.stderr().strip().splitlines()[-1]
    assert last.startswith("lopbook.io.RunLocked: "), child.stderr()
    assert "another process" in last and "out" in last
    assert "wait for it to finish" in last or "run again" in last, last


def test_a_second_process_on_a_run_being_trained_gets_a_clear_error(
    spawn, tmp_path, reference, monkeypatch
):
    out = tmp_path / "out"
    first = spawn("first", dict(at="moved", name="checkpoint.pt", nth=3))
    first.expect("stopped")  # in the middle of training, holding the runs' locks
    files = snapshot(out)
    second = spawn("second")
    assert second.finish() != 0
    assert_clear_lock_error(second)
    assert not second.wrote()
    assert snapshot(out) == files  # the second process changed nothing
    first.let_go()
    assert first.finish() == 0, first.stderr()
    assert_saved_equal_reference(out, reference, monkeypatch)


def test_a_second_process_that_loaded_before_the_first_finished_does_not_redo_it(
    spawn, tmp_path, reference, monkeypatch
):
    """The second process looks at out_dir (nothing there yet) and only then reaches
    the runs' locks, after the first has finished them: it must not train them again
    from what it saw (replacing the finished results by partial ones meanwhile)."""
    out = tmp_path / "out"
    second = spawn("second", dict(at="lock"))
    second.expect("stopped")  # has looked at the (empty) out_dir, not yet locked
    first = spawn("first")
    assert first.finish() == 0, first.stderr()
    files = snapshot(out)
    second.let_go()
    if second.finish() == 0:  # it loaded the finished runs
        assert any(e[0] == "done" for e in second.events)
    else:
        assert_clear_lock_error(second)
    assert not second.wrote()
    assert snapshot(out) == files
    assert_saved_equal_reference(out, reference, monkeypatch)


def test_two_processes_started_together_leave_the_uninterrupted_results(
    spawn, tmp_path, reference, monkeypatch
):
    out = tmp_path / "out"
    children = [spawn("a"), spawn("b")]
    statuses = [child.finish() for child in children]
    assert 0 in statuses, [c.stderr() for c in children]
    for child, status in zip(children, statuses):
        if status != 0:
            assert_clear_lock_error(child)
    print("exit statuses:", statuses)
    assert_saved_equal_reference(out, reference, monkeypatch)


# ------------------------------------------------------------------------ bad files
SMALL = dict(tasks=2, examples_per_task=150, width=12)
FINISHED = [mnist(seed=0, **SMALL), mnist(seed=1, **SMALL, **CBP)]  # one group
OTHER = [mnist(seed=0, **dict(SMALL, width=20))]  # another group
PARTIAL = mnist(seed=5, **dict(SMALL, tasks=3))  # cut in its second task
EVERY = FINISHED + OTHER + [PARTIAL]


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An out_dir with finished runs of two groups and one cut in the middle (its
    checkpoint beside a partial result), and the uninterrupted results of all."""
    out = tmp_path_factory.mktemp("saved")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(locations, "reachable", lambda urls, timeout=0.0: False)
        uninterrupted = mnist_run(EVERY)
        mnist_run(FINISHED + OTHER, out_dir=out)
        original, calls = Lockstep.train_online, Counter()

        def cut(self, x, y):
            calls["n"] += 1
            if calls["n"] == 2:  # one chunk of 150 per task: dies in task 1
                raise Interrupted
            return original(self, x, y)

        m.setattr(Lockstep, "train_online", cut)
        with pytest.raises(Interrupted):
            mnist_run(PARTIAL, out_dir=out, checkpoint_every=0)
    return out, uninterrupted


def edit_json(change):
    def edit(path):
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))

    return edit


def truncate(fraction):
    def edit(path):
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return edit


def replace_text(old, new):
    def edit(path):
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))

    return edit


def without(key):
    def change(record):
        del record[key]

    return change


def setter(key, value):
    def change(record):
        record[key] = value

    return change


def rewrite_checkpoint(change):
    def edit(path):
        saved = torch.load(path, weights_only=True)
        change(saved)
        torch.save(saved, path)

    return edit


FINISHED_RESULT = (FINISHED[0], "result.json")
PARTIAL_RESULT = (PARTIAL, "result.json")
CHECKPOINT = (PARTIAL, "checkpoint.pt")

BAD_FILES = {
    "result-truncated-half": (FINISHED_RESULT, truncate(0.5)),
    "result-truncated-to-one-byte": (FINISHED_RESULT, truncate(1e-9)),
    "result-empty": (FINISHED_RESULT, truncate(0.0)),
    "partial-result-truncated": (PARTIAL_RESULT, truncate(0.7)),
    "result-invalid-json-by-hand": (
        FINISHED_RESULT,
        replace_text('"accuracy": [', '"accuracy": [,'),
    ),
    "result-with-a-comment": (
        FINISHED_RESULT,
        replace_text("{", "{ # checked by hand\n"),
    ),
    "result-binary-garbage": (
        FINISHED_RESULT,
        lambda p: p.write_bytes(bytes(range(256))),
    ),
    "result-a-list": (FINISHED_RESULT, lambda p: p.write_text("[1, 2, 3]")),
    "result-without-config": (FINISHED_RESULT, edit_json(without("config"))),
    "result-accuracy-a-string": (
        FINISHED_RESULT,
        edit_json(setter("accuracy", "high")),
    ),
    "result-accuracy-nested": (
        FINISHED_RESULT,
        edit_json(setter("accuracy", [[0.5, 0.6]])),
    ),
    "result-fewer-accuracies": (FINISHED_RESULT, edit_json(setter("tasks_done", 7))),
    "result-meta-a-string": (FINISHED_RESULT, edit_json(setter("meta", "by hand"))),
    "result-ragged-metrics": (
        FINISHED_RESULT,
        edit_json(lambda r: r["metrics"].update(task=[0, 1, 2])),
    ),
    "result-other-format": (FINISHED_RESULT, edit_json(setter("format", "mine/1"))),
    "checkpoint-truncated-half": (CHECKPOINT, truncate(0.5)),
    "checkpoint-truncated-to-its-header": (CHECKPOINT, truncate(0.02)),
    "checkpoint-empty": (CHECKPOINT, truncate(0.0)),
    "checkpoint-garbage": (CHECKPOINT, lambda p: p.write_bytes(b"\x00" * 1000)),
    "checkpoint-without-state": (
        CHECKPOINT,
        rewrite_checkpoint(lambda s: s.pop("state")),
    ),
}


@pytest.mark.parametrize("victim,edit", BAD_FILES.values(), ids=BAD_FILES)
def test_a_bad_file_is_named_with_what_to_do_and_nothing_else_is_lost(
    victim, edit, saved, tmp_path, monkeypatch
):
    source, uninterrupted = saved
    out = tmp_path / "out"
    shutil.copytree(source, out)
    cfg, name = victim
    bad = runner.run_directory(cfg, out) / name
    edit(bad)
    before = snapshot(out)

    with monkeypatch.context() as m:
        forbid_training(m)
        with pytest.raises(ValueError) as caught:
            mnist_run(EVERY, out_dir=out)
    message = str(caught.value)
    assert str(bad) in message and "delete" in message, message
    # the error is lopbook's own, not a traceback from inside json, numpy or torch
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert Path(caught.traceback[-1].path).is_relative_to(Path(lopbook.__file__).parent)
    if name == "result.json":
        with pytest.raises(ValueError, match=str(bad)):
            load_results(out)
    assert snapshot(out) == before  # nothing was written, nothing was lost

    # doing what the message says: the run is trained again (from its checkpoint or
    # from the start), every other run is loaded, and all give the uninterrupted numbers
    if "directory" in message:
        shutil.rmtree(bad.parent)
    else:
        bad.unlink()
    again = mnist_run(EVERY, out_dir=out, checkpoint_every=0)
    for a, b in zip(again, uninterrupted):
        assert_identical(a, b)
    for cfg in FINISHED + OTHER:  # loaded, not rewritten
        directory = runner.run_directory(cfg, out)
        if directory != bad.parent:
            key = f"{directory.name}/result.json"
            assert (directory / "result.json").read_bytes() == before[key]


if __name__ == "__main__" and sys.argv[1:] == ["zygote"]:
    zygote_main()
