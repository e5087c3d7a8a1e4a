"""The lockstep engine of this checkout against the one of another checkout, in one process.

    git worktree add /tmp/old <commit>
    python benchmarks/compare_engines.py /tmp/old

Both engines train the same networks on the same random data, timed alternately (six times each, one second of
this process's CPU time per measurement), so that the slow drifts of a shared machine affect both alike; the
median run-steps per second of each and their ratio are printed. The other checkout's ``lopbook`` is imported
under another name (copied to a temporary folder as ``lopbook_other``); both the API before the method registry
(``RunSettings(replacement_rate=...)``) and after it are understood.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lopbook.engine import Lockstep
from lopbook.nets import MLP, ConvNet

CLOCK = time.process_time  # CPU time of this process: what the machine gives others does not count


def other_package(checkout: Path):
    folder = Path(tempfile.mkdtemp())
    shutil.copytree(checkout / "lopbook", folder / "lopbook_other")
    sys.path.insert(0, str(folder))
    import lopbook_other.engine as engine
    import lopbook_other.nets as nets

    return engine, nets


def settings(module, seed, step_size, momentum=0.0, cbp=False):
    fields = {f.name for f in dataclasses.fields(module.RunSettings)}
    if "replacement_rate" in fields:  # before the method registry
        return module.RunSettings(seed=seed, step_size=step_size, momentum=momentum,
                                  replacement_rate=1e-4 if cbp else 0.0)
    if not cbp:
        return module.RunSettings(seed=seed, step_size=step_size, momentum=momentum)
    import importlib

    registry = importlib.import_module(module.__name__.rsplit(".", 1)[0] + ".methods")
    return module.RunSettings(seed=seed, step_size=step_size, momentum=momentum, method="continual_backprop",
                              hyperparameters=registry.settings("continual_backprop", replacement_rate=1e-4))


def compare(make, step, label):
    engines = {"this": make("this"), "other": make("other")}
    for e in engines.values():
        step(e)
    found = {"this": [], "other": []}
    for rep in range(6):
        for k in (("other", "this") if rep % 2 == 0 else ("this", "other")):
            n, t = 0, CLOCK()
            while CLOCK() - t < 1.0:
                n += step(engines[k])
            found[k].append(n / (CLOCK() - t))
    a, b = statistics.median(found["this"]), statistics.median(found["other"])
    print(f"{label:40s} other {b:9.0f}  this {a:9.0f}  this/other {a / b:.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="root of the other checkout (holds lopbook/)")
    parser.add_argument("--convnet-only", action="store_true",
                        help="only the ConvNet cases (training at batches of 100 and 25, and evaluation)")
    args = parser.parse_args()
    other_engine, other_nets = other_package(args.other)
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    modules = {"this": (sys.modules[Lockstep.__module__], MLP, ConvNet),
               "other": (other_engine, other_nets.MLP, other_nets.ConvNet)}
    mlp_cases = [(100, 1, False), (100, 30, False), (100, 1, True), (100, 30, True), (2000, 10, False),
                 (2000, 10, True)]
    for width, R, cbp in [] if args.convnet_only else mlp_cases:
        chunk = 64 if width * R <= 10_000 else 2
        x, y = torch.rand(R, chunk, 784), torch.randint(0, 10, (R, chunk))

        def make(k):
            engine, mlp, _ = modules[k]
            return engine.Lockstep([mlp(784, width, seed=r) for r in range(R)],
                                   [settings(engine, r, 0.003, cbp=cbp) for r in range(R)])

        def step(e):
            e.train_online(x, y)
            return chunk * R

        compare(make, step, f"width {width}, R {R}, {'continual bp' if cbp else 'backprop'} (run-steps/s)")

    def make_conv(k):
        engine, _, convnet = modules[k]
        return engine.Lockstep([convnet(seed=r) for r in range(10)],
                               [settings(engine, r, 0.01, momentum=0.9) for r in range(10)])

    for batch in (100, 25):
        x, y = torch.rand(10, batch, 3, 32, 32), torch.randint(0, 2, (10, batch))

        def conv_step(e):
            e.learn(x, y)
            return x.shape[0] * x.shape[1]

        compare(make_conv, conv_step, f"ConvNet, 10 runs x batch {batch} (images/s)")
    x, y = torch.rand(10, 100, 3, 32, 32), torch.randint(0, 2, (10, 100))

    def conv_evaluate(e):
        e.evaluate(x, y)
        return 1000

    compare(make_conv, conv_evaluate, "ConvNet, evaluation of 10 runs x 100 (images/s)")

if __name__ == "__main__":
    main()
