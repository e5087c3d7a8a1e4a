"""Throughput of one-example-at-a-time training: a plain PyTorch loop vs the lockstep engine.

    python benchmarks/online_step.py                 # CPU or CUDA, whatever is there
    python benchmarks/online_step.py --device cpu --widths 100 --runs 1 10 30
    python benchmarks/online_step.py --convnet       # also the Continual ImageNet ConvNet (batch 100)

(a) is the usual way: one network per process, ``nn.Sequential`` + ``torch.optim.SGD`` + cross-entropy at batch
size 1. (b) is :class:`lopbook.engine.Lockstep` with R runs. Both learn the paper's Permuted-MNIST network
(784 -> 3 hidden layers -> 10) on random inputs (speed does not depend on the data). Reported: run-steps per second
(R networks each taking one step count R) and the ratio to (a). On the CPU each is timed with one thread and with
all threads and the faster is kept (per-call overhead dominates tiny steps, where extra threads only cost). On
CUDA the engine is also compared with the memory-bandwidth bound: the bytes of weights read and written per
step (forward read, backward read, update read + write: 16 bytes per weight) over the measured copy bandwidth.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn

from lopbook import methods
from lopbook.engine import Lockstep, RunSettings
from lopbook.nets import MLP, ConvNet


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, device, min_time=1.5, min_steps=5):
    """Steps per second of ``step()`` (after a warm-up), measured for at least ``min_time`` seconds."""
    for _ in range(3):
        step()
    sync(device)
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        if n >= min_steps and n % 5 == 0:
            sync(device)
            if time.perf_counter() - start >= min_time:
                return n / (time.perf_counter() - start)


def best_of_threads(measure, device):
    if device.type != "cpu":
        return measure(), None
    results = {}
    for threads in sorted({1, torch.get_num_threads()}):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results[threads] = measure()
        finally:
            torch.set_num_threads(before)
    threads = max(results, key=results.get)
    return results[threads], threads


def plain_loop(width, device, steps=256):
    net = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.003)
    x, y = torch.rand(steps, 1, 784, device=device), torch.randint(0, 10, (steps, 1), device=device)
    i = [0]

    def step():
        k = i[0] = (i[0] + 1) % steps
        loss = nn.functional.cross_entropy(net(x[k]), y[k])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(step, device)


def engine_loop(width, runs, device, chunk=None, replacement_rate=0.0):
    if chunk is None:      # examples per call: enough to hide the call, few enough to time big networks quickly
        chunk = 64 if width * runs <= 10_000 or device.type == "cuda" else 2
    if replacement_rate:
        cbp = methods.settings("continual_backprop", replacement_rate=replacement_rate)
        settings = dict(method="continual_backprop", hyperparameters=cbp)
    else:
        settings = {}
    engine = Lockstep([MLP(784, width, seed=r) for r in range(runs)],
                      [RunSettings(seed=r, step_size=0.003, **settings) for r in range(runs)], device=device)
    x = torch.rand(runs, chunk, 784, device=device)
    y = torch.randint(0, 10, (runs, chunk), device=device)
    return timed(lambda: engine.train_online(x, y), device) * chunk * runs      # run-steps: every run steps


def copy_bandwidth(device, megabytes=1024):
    a = torch.empty(megabytes * 2 ** 20 // 4, device=device)
    b = torch.empty_like(a)
    rate = timed(lambda: b.copy_(a), device, min_time=1.0)
    return rate * 2 * a.numel() * 4     # bytes read + written per second


def mlp_weights(width):
    return 784 * width + 2 * width * width + 10 * width + 3 * width + 10


def convnet(device, runs=10, batch=100):
    x = torch.rand(runs, batch, 3, 32, 32, device=device)
    y = torch.randint(0, 2, (runs, batch), device=device)
    nets = [ConvNet(seed=r).to(device) for r in range(runs)]
    opts = [torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9) for n in nets]

    def separate():
        for r in range(runs):
            loss = nn.functional.cross_entropy(nets[r](x[r]), y[r])
            opts[r].zero_grad()
            loss.backward()
            opts[r].step()

    engine = Lockstep([ConvNet(seed=r) for r in range(runs)],
                      [RunSettings(seed=r, step_size=0.01, momentum=0.9) for r in range(runs)], device=device)
    a = timed(separate, device) * runs * batch
    b = timed(lambda: engine.learn(x, y), device) * runs * batch
    return a, b


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None)
    parser.add_argument("--widths", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--cbp", action="store_true", help="also time continual backprop (replacement rate 1e-4)")
    parser.add_argument("--convnet", action="store_true", help="also time the ConvNet, 10 runs of batch 100")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # As lopbook's runner does: the repeated random batches drive some values into denormal floats, which the CPU
    # processes very slowly and which would otherwise dominate the timings of both loops.
    torch.set_flush_denormal(True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads available"
    print(f"torch {torch.__version__}, device {device} ({name})")
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    if bandwidth:
        print(f"measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s")
    header = f"{'width':>6} {'learner':<22} {'runs':>4} {'run-steps/s':>12} {'x plain':>8} {'threads':>7}"
    if bandwidth:
        header += f" {'bound':>10} {'of bound':>8}"
    print(header)
    for width in args.widths:
        base, threads = best_of_threads(lambda: plain_loop(width, device), device)
        print(f"{width:>6} {'plain PyTorch loop':<22} {1:>4} {base:>12.0f} {1.0:>8.2f} {threads or '':>7}")
        variants = [("engine, backprop", 0.0)] + ([("engine, continual bp", 1e-4)] if args.cbp else [])
        for label, rate in variants:
            for runs in args.runs:
                speed, threads = best_of_threads(lambda: engine_loop(width, runs, device, replacement_rate=rate),
                                                 device)
                line = f"{width:>6} {label:<22} {runs:>4} {speed:>12.0f} {speed / base:>8.2f} {threads or '':>7}"
                if bandwidth:
                    bound = bandwidth / (16 * mlp_weights(width))      # run-steps per second
                    line += f" {bound:>10.0f} {speed / bound:>8.1%}"
                print(line, flush=True)
    if args.convnet:
        a, b = convnet(device)
        print(f"ConvNet, 10 runs x batch 100: separate loops {a:.0f} images/s, engine {b:.0f} images/s "
              f"({b / a:.2f}x)")


if __name__ == "__main__":
    main()
