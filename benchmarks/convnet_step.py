"""Where the time of a Continual ImageNet ConvNet step goes on the CPU, and what makes it faster.

    python benchmarks/convnet_step.py                  # 10 runs x mini-batches of 100 (the paper's batch)
    python benchmarks/convnet_step.py --batch 25       # the batch of chapter 2's quick and medium scales

Three parts, each timed in this one process, alternating the variants (``--reps`` rounds; medians of images per
second, wall clock, so note the machine's load):

1. **Layout and order of the conv layers**, in plain ``torch.nn.functional`` (forward, autograd backward): each
   run's convolutions on NCHW feature maps with ReLU before max-pooling (the network as written, and the engine
   before this benchmark), on channels-last (NHWC) maps, and on NHWC maps with max-pooling before ReLU (the same
   numbers, since ReLU is monotone, on a quarter of the values); and one grouped convolution of all runs, NCHW
   and NHWC.
2. **The engine** (:class:`lopbook.engine.Lockstep`, SGD with momentum 0.9): a training step and an evaluation
   pass, with separate convolutions per run (the CPU default) and one grouped convolution, at 1 and 2 threads.
   The book's runner trains one group of runs per worker process with one thread each, one worker per core.
3. **Evaluation's share** of a chapter-2 task at each scale (``lopbook.presets``): images trained per task
   (epochs x examples) against images evaluated (the task's test images), each at the speed measured in 2.
"""
from __future__ import annotations

import argparse
import platform
import statistics

import torch
import torch.nn.functional as F

from lopbook import presets
from lopbook.engine import Lockstep, RunSettings
from lopbook.nets import ConvNet
from online_step import timed  # this folder's benchmark: steps per second after a warm-up

CL = torch.channels_last
CPU = torch.device("cpu")


def measure(variants, images, reps, seconds, threads=(1,)):
    """Median images/s of each variant at each thread count, alternating the variants in every round."""
    found = {}
    for rep in range(reps):
        for t in threads:
            torch.set_num_threads(t)
            names = list(variants) if rep % 2 == 0 else list(reversed(variants))
            for name in names:
                found.setdefault((name, t), []).append(images * timed(variants[name], CPU, seconds))
    return {k: statistics.median(v) for k, v in found.items()}


def functional_variants(R, B):
    """Part 1: the conv layers of R runs as plain functional code, then the fully connected layers."""
    torch.manual_seed(0)
    nets = [ConvNet(seed=r) for r in range(R)]
    convs = [[n.convs[i] for n in nets] for i in range(3)]
    ws = [torch.stack([c.weight.detach() for c in layer]).requires_grad_() for layer in convs]
    bs = [torch.stack([c.bias.detach() for c in layer]).requires_grad_() for layer in convs]
    fcs = [torch.stack([layer.weight.detach() for layer in layers]).requires_grad_()
           for layers in zip(*[(n.fcs[0], n.fcs[1], n.output) for n in nets])]
    x, y = torch.rand(R, B, 3, 32, 32), torch.randint(0, 2, (R, B))

    def head(h):
        for w in fcs[:-1]:
            h = torch.bmm(h, w.transpose(1, 2)).relu()
        out = torch.bmm(h, fcs[-1].transpose(1, 2))
        return F.cross_entropy(out.reshape(R * B, -1), y.reshape(-1))

    def separate(channels_last, pool_first):
        hs = [h.contiguous(memory_format=CL) if channels_last else h for h in x]
        for w, b in zip(ws, bs):
            if pool_first:
                hs = [F.relu(F.max_pool2d(F.conv2d(h, w[r], b[r]), 2)) for r, h in enumerate(hs)]
            else:
                hs = [F.max_pool2d(F.relu(F.conv2d(h, w[r], b[r])), 2) for r, h in enumerate(hs)]
        return head(torch.stack(hs).flatten(2))

    def grouped(channels_last):
        h = x.transpose(0, 1).reshape(B, R * 3, 32, 32)
        if channels_last:
            h = h.contiguous(memory_format=CL)
        for w, b in zip(ws, bs):
            h = F.relu(F.max_pool2d(F.conv2d(h, w.flatten(0, 1), b.flatten(), groups=R), 2))
        return head(h.reshape(B, R, -1).transpose(0, 1))

    params = ws + bs + fcs

    def train(forward):
        return lambda: torch.autograd.grad(forward(), params)

    return {
        "separate, NCHW, ReLU then pool": train(lambda: separate(False, False)),
        "separate, NHWC, ReLU then pool": train(lambda: separate(True, False)),
        "separate, NHWC, pool then ReLU": train(lambda: separate(True, True)),
        "grouped, NCHW, pool then ReLU": train(lambda: grouped(False)),
        "grouped, NHWC, pool then ReLU": train(lambda: grouped(True)),
    }


def engine_variants(R, B):
    """Part 2: the engine's training step and evaluation, separate and grouped convolutions."""
    x, y = torch.rand(R, B, 3, 32, 32), torch.randint(0, 2, (R, B))
    variants = {}
    for grouped in (False, True):
        engine = Lockstep([ConvNet(seed=r) for r in range(R)],
                          [RunSettings(seed=r, step_size=0.01, momentum=0.9) for r in range(R)],
                          grouped_convolutions=grouped)
        kind = "grouped" if grouped else "separate"
        variants[f"train step, {kind}"] = lambda e=engine: e.learn(x, y)
        variants[f"evaluate, {kind}"] = lambda e=engine: e.evaluate(x, y)
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs in lockstep (chapter 2: 10)")
    parser.add_argument("--batch", type=int, default=100, help="mini-batch size (the paper: 100)")
    parser.add_argument("--reps", type=int, default=3, help="rounds of alternating measurements")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one measurement")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    R, B = args.runs, args.batch
    images = R * B
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads available; {R} runs x batch {B}")

    print("\n1. conv layers, functional code (training: forward + backward), images/s")
    found = measure(functional_variants(R, B), images, args.reps, args.seconds)
    base = found[("separate, NCHW, ReLU then pool", 1)]
    for (name, _), v in found.items():
        print(f"   {name:34s} {v:7.0f}   x{v / base:.2f}")

    print("\n2. the engine, images/s at 1 and 2 threads")
    found = measure(engine_variants(R, B), images, args.reps, args.seconds, threads=(1, 2))
    for (name, t), v in sorted(found.items()):
        print(f"   {name:34s} threads {t}: {v:7.0f}")

    print("\n3. evaluation's share of a chapter-2 task, per run in lockstep (separate convolutions, 1 thread, this "
          "batch size; test images: ImageNet 32x32's 100 per class)")
    train, evaluate = found[("train step, separate", 1)], found[("evaluate, separate", 1)]
    for scale in ("quick", "medium", "full"):
        P = presets.resolve("02_continual_imagenet", scale, override=False)
        per_class = P.train_per_class or 600       # 0: all (ImageNet 32x32: 600 per class)
        trained, tested = P.epochs * 2 * per_class, 2 * (P.test_per_class or 100)
        t_train, t_test = trained / train, tested / evaluate
        print(f"   {scale:6s} ({P.epochs} epochs x {2 * per_class} images, batch {P.batch_size}; {tested} test "
              f"images): training {t_train:6.2f} s, evaluation {t_test:5.3f} s "
              f"({100 * t_test / (t_train + t_test):.1f}%)")


if __name__ == "__main__":
    main()
