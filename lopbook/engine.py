"""Many runs in lockstep: R independent networks trained as one batched model.

The paper averages 30 runs per setting, and Online Permuted MNIST learns one
example at a time. Trained the usual way (one network per process, autograd and
``torch.optim`` at batch size 1) a step costs far more in per-call overhead than
in arithmetic. :class:`Lockstep` stacks the weights of R runs (``[R, out, in]``)
and steps them together with batched matrix products, so one kernel call serves
every run.

What the engine holds is only what all methods share: the stacked parameters,
the forward pass, the backward pass, the optimisers (SGD with momentum, Adam) and
the calls of each method's hooks (:mod:`lopbook.methods`). Each run keeps its own
seed, data, step size, momentum, method and hyperparameters; the network's shape
and the optimiser are shared.

**Performance path.** For the MLP the backward pass is written out by hand (no
autograd graph per example) and plain SGD is fused into it; it buys about 3x at
R = 1 and 18-20x at R = 30 over a plain PyTorch loop at width 100
(``benchmarks/online_step.py``). The ConvNet uses autograd. The tests pin both to
the reference learners of :mod:`lopbook.learners` (autograd and ``torch.optim``,
one network at a time), method by method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import methods as registry
from .methods.base import Hyperparameters, Method, Networks
from .metrics import PlasticityMetrics, metrics_from_activations
from .nets import MLP, ConvNet, activate
from .runtime import make_generator

__all__ = ["RunSettings", "Lockstep"]

_threshold_backward = torch.ops.aten.threshold_backward


@dataclass
class RunSettings:
    """What may differ between the runs trained together."""

    seed: int
    """seeds the run's random stream (dropout masks, noise, new units)"""
    step_size: float
    """the step size (learning rate)"""
    momentum: float = 0.0
    """SGD's momentum (Adam uses the engine's betas)"""
    method: str = "backprop"
    """a name in :data:`lopbook.methods.REGISTRY`"""
    hyperparameters: Hyperparameters | None = None
    """the method's hyperparameters (None: its defaults)"""

    def resolved(self) -> Hyperparameters:
        if self.hyperparameters is None:
            return registry.settings(self.method)
        if not isinstance(self.hyperparameters, registry.get(self.method).Settings):
            raise ValueError(
                f"run with method {self.method!r} got hyperparameters of type "
                f"{type(self.hyperparameters).__name__}"
            )
        return self.hyperparameters


class Lockstep:
    """R runs of an :class:`~lopbook.nets.MLP` or :class:`~lopbook.nets.ConvNet` in
    lockstep.

    Parameters
    ----------
    nets : the R initial networks (same architecture; no normalisation, or layer
        norm in the MLP); their weights are copied.
    runs : one :class:`RunSettings` per network.
    optimizer, betas : ``"sgd"`` or ``"adam"``, shared by all runs.
    loss : ``"cross_entropy"`` (classification) or ``"squared_error"`` (regression
        with one output, the MLP only).
    grouped_convolutions : the ConvNet's R convolutions of a layer as one grouped
        convolution (runs are groups of channels) instead of R separate ones. ``None``
        (default): grouped on CUDA, separate on the CPU, where a batch of 100 is big
        enough on its own and the grouped kernel measured 2x slower
        (``benchmarks/convnet_step.py``). Both give the same numbers up to rounding.
    """

    def __init__(
        self,
        nets: list,
        runs: list[RunSettings],
        optimizer: str = "sgd",
        betas: tuple[float, float] = (0.9, 0.999),
        device=None,
        loss: str = "cross_entropy",
        grouped_convolutions: bool | None = None,
    ):
        self._check(nets, runs, optimizer)
        if loss not in ("cross_entropy", "squared_error"):
            raise ValueError(
                f"loss must be 'cross_entropy' or 'squared_error', got {loss!r}"
            )
        if loss == "squared_error" and (
            isinstance(nets[0], ConvNet) or nets[0].out_features != 1
        ):
            raise ValueError("the squared error is for an MLP with one output")
        self.loss = loss
        self.activation = getattr(nets[0], "activation", "relu")
        # runs of one method instance must be neighbours: sort them (stably)
        keys = [(r.method, r.resolved().shared()) for r in runs]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        order = sorted(range(len(runs)), key=lambda i: first[keys[i]])
        self._order = order  # internal position -> given run
        self._position = np.argsort(order)  # given run -> internal position
        self._identity = order == list(range(len(runs)))
        nets = [nets[i] for i in order]
        runs = [runs[i] for i in order]

        self.device = (
            torch.device(device)
            if device is not None
            else next(nets[0].parameters()).device
        )
        self.conv = isinstance(nets[0], ConvNet)
        self.grouped = (
            self.device.type == "cuda"
            if grouped_convolutions is None
            else bool(grouped_convolutions)
        ) and self.conv
        self.runs = runs
        self.R = R = len(runs)
        self.optimizer, self.betas = optimizer, betas
        self.dropout = nets[0].dropout
        layers = [n.weight_layers() for n in nets]

        def stack(tensors):
            return (
                torch.stack([t.detach() for t in tensors]).to(self.device).contiguous()
            )

        self.weights = [
            stack([ls[i].weight for ls in layers]) for i in range(len(layers[0]))
        ]
        self.biases = [
            stack([ls[i].bias for ls in layers]) for i in range(len(layers[0]))
        ]
        self.widths = [w.shape[1] for w in self.weights[:-1]]
        # layer norm's per-unit gain and shift, [R, units] per hidden layer
        self.layer_norm = nets[0].norm == "layer"
        norms = (
            [[n.norms[l] for n in nets] for l in range(len(self.widths))]
            if self.layer_norm
            else []
        )
        self.gains = [stack([m.weight for m in ms]) for ms in norms]
        self.shifts = [stack([m.bias for m in ms]) for ms in norms]
        self.generators = [make_generator(r.seed, self.device) for r in runs]
        self.nets = Networks(
            self.weights,
            self.biases,
            self.gains,
            self.shifts,
            self.generators,
            nets[0].init_bounds()[0],
            self._buffers_of,
        )
        self.nets.nonnegative = self.activation == "relu"
        self.params = self.nets.params
        position = {id(p): i for i, p in enumerate(self.params)}
        self._w = [
            position[id(w)] for w in self.weights
        ]  # index of each layer's weight
        self._b = [position[id(b)] for b in self.biases]
        self._g = [position[id(g)] for g in self.gains]
        self._s = [position[id(s)] for s in self.shifts]
        self.n_outputs = self.weights[-1].shape[1]
        self.dtype = self.weights[0].dtype

        def column(values, dims):
            return torch.tensor(values, dtype=self.dtype, device=self.device).view(
                R, *[1] * dims
            )

        self._lr_out = column([r.step_size for r in runs], 2)
        self._neg_lr = [
            column([-r.step_size for r in runs], p.dim() - 1) for p in self.params
        ]
        self.any_momentum = any(r.momentum > 0 for r in runs)
        self._minus_one = torch.full(
            (1, 1, 1), -1.0, device=self.device, dtype=self.dtype
        )

        # Optimiser state and gradients live in flat [R, all parameters] buffers, so
        # that the update is a handful of operations whatever the number of layers.
        self._sizes = [p[0].numel() for p in self.params]
        total = sum(self._sizes)
        names = {
            "adam": ["exp_avg", "exp_avg_sq"],
            "sgd": ["momentum_buffer"] if self.any_momentum else [],
        }[optimizer]
        self._flat_state = {
            name: torch.zeros(R, total, device=self.device, dtype=self.dtype)
            for name in names
        }
        self.state = {
            name: self._views(flat) for name, flat in self._flat_state.items()
        }
        self._flat_grad = torch.zeros(R, total, device=self.device, dtype=self.dtype)
        self._grad_views = self._views(self._flat_grad)
        self.adam_step = 0
        flat = lambda values: torch.tensor(
            values, dtype=self.dtype, device=self.device
        ).view(R, 1)
        self._flat_lr = flat([r.step_size for r in runs])
        self._flat_momentum = flat([r.momentum for r in runs])

        # one instance of each method, over the neighbouring runs that share it
        self.methods: list[tuple[int, int, Method]] = []
        start = 0
        for stop in range(1, R + 1):
            if stop == R or keys[order[stop]] != keys[order[start]]:
                cls = registry.get(runs[start].method)
                reason = cls.supports(
                    nets[0], optimizer, max(r.momentum for r in runs[start:stop])
                )
                if reason:
                    raise ValueError(
                        f"method {cls.name!r} cannot train this network: {reason}"
                    )
                method = cls(
                    self.nets.select(start, stop),
                    [r.resolved() for r in runs[start:stop]],
                )
                self.methods.append((start, stop, method))
                start = stop
        self._with_gradient = [
            (a, b, m)
            for a, b, m in self.methods
            if type(m).gradient is not Method.gradient
        ]
        self._with_after_step = [
            (a, b, m)
            for a, b, m in self.methods
            if type(m).after_step is not Method.after_step
        ]
        needs_gradients = any(type(m).needs_gradients for _, _, m in self.methods)
        self.fused_sgd = (
            optimizer == "sgd"
            and not self.any_momentum
            and not self.conv
            and not needs_gradients
        )
        if self.conv:
            for p in self.params:
                p.requires_grad_(True)

    @staticmethod
    def _check(nets, runs, optimizer) -> None:
        if len(nets) != len(runs) or not nets:
            raise ValueError(
                "give one RunSettings per network, and at least one network"
            )
        kind = type(nets[0])
        if kind not in (MLP, ConvNet) or any(type(n) is not kind for n in nets):
            raise ValueError(
                "all networks must be lopbook MLPs, or all lopbook ConvNets"
            )
        if not all(Lockstep.supports(n) for n in nets):
            raise ValueError(
                "the lockstep engine supports layer norm in the MLP and no other "
                "normalisation; train those runs with the reference learners "
                "(backend='reference')"
            )
        shapes = {tuple(tuple(p.shape) for p in n.parameters()) for n in nets}
        if (
            len(shapes) != 1
            or len({n.dropout for n in nets}) != 1
            or len({n.norm for n in nets}) != 1
            or len({n.init for n in nets}) != 1
            or len({getattr(n, "activation", "relu") for n in nets}) != 1
        ):
            raise ValueError(
                "all networks must have the same architecture, dropout, "
                "normalisation and initialisation"
            )
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        for r in runs:
            if not r.step_size > 0 or not 0 <= r.momentum < 1:
                raise ValueError(
                    f"invalid run settings {r}: step_size must be > 0 and "
                    "momentum in [0, 1)"
                )
            if optimizer == "adam" and r.momentum:
                raise ValueError("momentum is an SGD setting; Adam uses betas")
            # an unknown method or hyperparameters of another one fail here
            r.resolved()

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of a flat ``[R, all parameters]`` buffer shaped like each parameter."""
        views, start = [], 0
        for p, n in zip(self.params, self._sizes):
            views.append(flat[:, start : start + n].view(p.shape))
            start += n
        return views

    def _buffers_of(self, i: int) -> list[torch.Tensor]:
        return [buffers[i] for buffers in self.state.values()]

    @property
    def step(self) -> int:
        return self.nets.step

    @staticmethod
    def supports(net) -> bool:
        """Whether the engine can train ``net`` (no normalisation, or layer norm in the
        MLP)."""
        return net.norms is None or (isinstance(net, MLP) and net.norm == "layer")

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        """Runs in the engine's order (it keeps the runs of each method together)."""
        return x if self._identity else x[self._order]

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return (
            x if self._identity else x[torch.as_tensor(self._position, device=x.device)]
        )

    def method_of(self, r: int) -> tuple[Method, int]:
        """The method instance that trains run ``r``, and ``r``'s index within it."""
        i = int(self._position[r])
        for a, b, m in self.methods:
            if a <= i < b:
                return m, i - a
        raise IndexError(r)

    # ------------------------------------------------------------------ forward passes
    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        keep = torch.empty_like(h)
        for r, g in enumerate(self.generators):
            keep[r].bernoulli_(1.0 - self.dropout, generator=g)
        return keep

    def forward(self, x: torch.Tensor, train: bool = False):
        """Logits ``[R, B, outputs]`` for inputs ``x`` (``[R, B, ...]``, engine order),
        the hidden activations, the inputs of every layer and the dropout masks."""
        p = self.dropout if train else 0.0
        hidden, inputs, keeps = [], [], []
        h = x
        # Conv layers: convolution, then 2x2 max-pooling, then ReLU. The network is
        # defined as ReLU before pooling; ReLU is monotone, so it commutes with the max
        # and this order gives the same activations and gradients, on a quarter of the
        # values.
        if self.grouped:
            # the R runs' convolutions as one grouped convolution: runs are groups of
            # channels
            R, B = x.shape[:2]
            h = x.transpose(0, 1).reshape(B, R * x.shape[2], *x.shape[3:])
            for w, b in zip(self.weights[:3], self.biases[:3]):
                h = F.relu(
                    F.max_pool2d(F.conv2d(h, w.flatten(0, 1), b.flatten(), groups=R), 2)
                )
                hidden.append(h.view(B, R, -1, *h.shape[2:]).transpose(0, 1))
            h = h.view(B, R, -1).transpose(0, 1)
            start = 3
        elif self.conv:
            # each run's convolution on its own (a batch of 100 is big enough), on
            # channels-last (NHWC) feature maps: mkldnn's fast layout, in which
            # max-pooling measured 7x faster than on NCHW maps
            per_run = [h.contiguous(memory_format=torch.channels_last) for h in x]
            for w, b in zip(self.weights[:3], self.biases[:3]):
                per_run = [
                    F.relu(F.max_pool2d(F.conv2d(h, w[r], b[r]), 2))
                    for r, h in enumerate(per_run)
                ]
                hidden.append(torch.stack(per_run))
            h = hidden[-1].flatten(2)
            start = 3
        else:
            start = 0
        self._norm_cache, self._pre = [], []
        for l, (w, b) in enumerate(
            zip(self.weights[start:-1], self.biases[start:-1]), start=start
        ):
            inputs.append(h)
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if self.layer_norm:
                z = h
                normed, mean, rstd = torch.native_layer_norm(
                    z, [z.shape[-1]], None, None, 1e-5
                )
                h = torch.addcmul(
                    self.shifts[l].unsqueeze(1), normed, self.gains[l].unsqueeze(1)
                )
                self._norm_cache.append((z, normed, mean, rstd))
            if self.activation == "relu":
                h = h.relu_()
            else:
                self._pre.append(h)  # pre-activations, for the backward pass
                h = activate(h, self.activation)
            hidden.append(h)
            if p > 0:
                keep = self._dropout(h)
                keeps.append(keep)
                h = h * keep / (1.0 - p)
        inputs.append(h)
        out = torch.baddbmm(
            self.biases[-1].unsqueeze(1), h, self.weights[-1].transpose(1, 2)
        )
        return out, hidden, inputs, keeps

    # ------------------------------------------------------------------ one step
    def learn(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One update of every run on its batch (``x``: ``[R, B, ...]``, ``y``: ``[R,
        B]``).

        Returns the logits computed before the update (``[R, B, outputs]``)."""
        return self._out(self._learn(self._in(x), self._in(y)))

    def _learn(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.conv:
            out, hidden = self._backward_autograd(x, y)
        else:
            out, hidden = self._backward_mlp(x, y)
        self.nets.step += 1
        if self._with_after_step:
            if torch.is_grad_enabled():
                with torch.no_grad():
                    self._after_step(hidden)
            else:
                self._after_step(hidden)
        return out

    def _after_step(self, hidden) -> None:
        for a, b, method in self._with_after_step:
            method.after_step(hidden if b - a == self.R else [h[a:b] for h in hidden])

    def _backward_autograd(self, x, y):
        with torch.enable_grad():
            out, hidden, _, _ = self.forward(x, train=True)
            R, B, C = out.shape
            loss = (
                F.cross_entropy(
                    out.reshape(R * B, C), y.reshape(R * B), reduction="sum"
                )
                / B
            )
            grads = torch.autograd.grad(loss, self.params)
        with torch.no_grad():
            self._update(list(grads))
        return out.detach(), [h.detach() for h in hidden]

    def _gradient_terms(self, i: int, grad: torch.Tensor | None) -> None:
        """Add the methods' gradient terms for parameter ``i``: to ``grad``, or (fused
        SGD, ``grad`` None) straight to the parameter, times minus the step size."""
        for a, b, method in self._with_gradient:
            term = method.gradient(
                i, self.params[i][a:b], None if grad is None else grad[a:b]
            )
            if term is None:
                continue
            if grad is None:
                self.params[i][a:b].addcmul_(term, self._neg_lr[i][a:b])
            else:
                grad[a:b].add_(term)

    @torch.no_grad()
    def _backward_mlp(self, x, y):
        out, hidden, inputs, keeps = self.forward(x, train=True)
        B = x.shape[1]
        if (
            self.loss == "cross_entropy"
        ):  # d(cross-entropy)/d(logits) = softmax - one-hot
            g = torch.softmax(out, dim=-1)
            g.scatter_add_(2, y.unsqueeze(2), self._minus_one.expand(*y.shape, 1))
        else:  # d(y_hat - y)^2 / d(y_hat) = 2 (y_hat - y)
            g = (out - y.unsqueeze(2)).mul_(2.0)
        if B > 1:
            g.div_(B)
        L = len(self.weights)
        terms = bool(self._with_gradient)
        if self.fused_sgd:
            g.mul_(
                self._lr_out
            )  # every layer's gradient is now scaled by its run's step size
            for l in reversed(range(L)):
                w, b = self.weights[l], self.biases[l]
                g_in = torch.bmm(g, w) if l > 0 else None
                if terms:
                    self._gradient_terms(self._w[l], None)
                    self._gradient_terms(self._b[l], None)
                w.baddbmm_(g.transpose(1, 2), inputs[l], alpha=-1.0)
                b.sub_(g[:, 0] if B == 1 else g.sum(1))
                if l > 0:
                    g = self._activation_backward(g_in, hidden[l - 1], keeps, l - 1)
                    if self.layer_norm:
                        g, d_gain, d_shift = self._norm_backward(g, l - 1)
                        if terms:
                            self._gradient_terms(self._g[l - 1], None)
                            self._gradient_terms(self._s[l - 1], None)
                        self.gains[l - 1].sub_(d_gain)
                        self.shifts[l - 1].sub_(d_shift)
        else:
            grads = [None] * len(self.params)
            for l in reversed(range(L)):
                grads[self._w[l]] = torch.bmm(g.transpose(1, 2), inputs[l])
                grads[self._b[l]] = g.sum(1)
                if l > 0:
                    g = self._activation_backward(
                        torch.bmm(g, self.weights[l]), hidden[l - 1], keeps, l - 1
                    )
                    if self.layer_norm:
                        g, grads[self._g[l - 1]], grads[self._s[l - 1]] = (
                            self._norm_backward(g, l - 1)
                        )
            self._update(grads)
        return out, hidden

    def _norm_backward(self, g, l):
        """Through layer norm: the gradients of its input, gain and shift."""
        z, normed, mean, rstd = self._norm_cache[l]
        d_gain = (g * normed).sum(1)
        d_shift = g.sum(1)
        g = torch.ops.aten.native_layer_norm_backward(
            g * self.gains[l].unsqueeze(1),
            z,
            [z.shape[-1]],
            mean,
            rstd,
            None,
            None,
            [True, False, False],
        )[0]
        return g, d_gain, d_shift

    def _activation_backward(self, g, h, keeps, l):
        """Through dropout and the activation function of hidden layer ``l`` (output
        ``h``): the gradient with respect to its pre-activations."""
        if keeps:
            g = g * keeps[l] / (1.0 - self.dropout)
        a = self.activation
        if a == "relu":
            return _threshold_backward(g, h, 0)
        if a == "linear":
            return g
        if a == "tanh":
            return g * (1 - h * h)
        if a == "sigmoid":
            return g * h * (1 - h)
        if a == "leaky_relu":
            return torch.where(h > 0, g, 0.01 * g)
        if a == "elu":
            return torch.where(h > 0, g, g * (h + 1))
        s = torch.sigmoid(self._pre[l])  # swish: z sigmoid(z)
        return g * s * (1 + self._pre[l] * (1 - s))

    def _update(self, grads: list) -> None:
        """SGD (momentum) or Adam, as ``torch.optim`` does it, with per-run
        hyperparameters.

        The gradients (plus the methods' terms) are gathered into one flat buffer,
        updated there in a few operations, and added to the parameters."""
        torch._foreach_copy_(self._grad_views, grads)
        for i in range(len(self.params)) if self._with_gradient else ():
            self._gradient_terms(i, self._grad_views[i])
        grad = self._flat_grad
        if self.optimizer == "adam":
            self.adam_step += 1
            beta1, beta2 = self.betas
            c1 = 1 - beta1**self.adam_step
            c2 = math.sqrt(1 - beta2**self.adam_step)
            m, v = self._flat_state["exp_avg"], self._flat_state["exp_avg_sq"]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / c2).add_(1e-8)
            torch.div(m, denom, out=grad).mul_(
                self._flat_lr / -c1
            )  # the step, in grad's buffer
            torch._foreach_add_(self.params, self._grad_views)
            return
        step = self._grad_views
        if self.any_momentum:
            self._flat_state["momentum_buffer"].mul_(self._flat_momentum).add_(grad)
            step = self.state["momentum_buffer"]
        torch._foreach_addcmul_(self.params, step, self._neg_lr)  # w - step_size * step

    # ------------------------------------------------------------------ what the
    # experiments call
    @torch.no_grad()
    def train_online(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Learn from ``x[:, i]`` (``[R, n, ...]``) one example at a time. Returns, per
        run, how many predictions made before each update were right (squared error:
        the sum of their squared errors); a device tensor, nothing is read back per
        step."""
        x, y = self._in(x), self._in(y)
        n = x.shape[1]
        if self.loss == "squared_error":  # the sum of the squared errors instead
            predictions = torch.empty(self.R, n, dtype=self.dtype, device=self.device)
            for i in range(n):
                out = self._learn(x[:, i : i + 1], y[:, i : i + 1])
                predictions[:, i].copy_(out[:, 0, 0])
            return self._out((predictions - y).square().sum(dim=1))
        predictions = torch.empty(self.R, n, dtype=torch.long, device=self.device)
        for i in range(n):
            out = self._learn(x[:, i : i + 1], y[:, i : i + 1])
            torch.argmax(out[:, 0], dim=-1, out=predictions[:, i])
        return self._out((predictions == y).sum(dim=1))

    def train_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One mini-batch update of every run; the number of correct predictions made
        before it."""
        out = self.learn(x, y)
        return (out.argmax(dim=-1) == y).sum(dim=1)

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
    ) -> torch.Tensor:
        """Correct predictions of each run on ``x`` (``[R, N, ...]``), no dropout."""
        x, y = self._in(x), self._in(y)
        correct = torch.zeros(self.R, dtype=torch.long, device=self.device)
        for i in range(0, x.shape[1], batch_size):
            out = self.forward(x[:, i : i + batch_size])[0]
            correct += (out.argmax(dim=-1) == y[:, i : i + batch_size]).sum(dim=1)
        return self._out(correct)

    @torch.no_grad()
    def metrics(self, probe: torch.Tensor) -> list[PlasticityMetrics]:
        """Dead units, weight magnitude and effective rank of each run on its probe
        batch."""
        hidden = self.forward(self._in(probe))[1]
        pre = self._pre  # pre-activations (activations other than ReLU)
        found = [
            metrics_from_activations(
                [h[i] for h in hidden],
                [w[i] for w in self.weights],
                [z[i] for z in pre],
                self.activation,
            )
            for i in range(self.R)
        ]
        return [found[int(self._position[r])] for r in range(self.R)]

    @torch.no_grad()
    def reset_head(self) -> None:
        """Zero the output layer and its optimiser state (Continual ImageNet's new
        task)."""
        for i in (len(self.params) - 2, len(self.params) - 1):
            self.params[i].zero_()
            for buffers in self.state.values():
                buffers[i].zero_()

    # ------------------------------------------------------------------ checkpoints,
    # run by run
    def run_state(self, r: int) -> dict:
        """Everything run ``r`` needs to continue exactly where it is."""
        i = int(self._position[r])
        method, j = self.method_of(r)
        return {
            "params": [p[i].detach().clone().cpu() for p in self.params],
            "optimizer": {
                name: [b[i].clone().cpu() for b in buffers]
                for name, buffers in self.state.items()
            },
            "adam_step": self.adam_step,
            "generator": self.generators[i].get_state(),
            "step": self.step,
            "method": method.name,
            "method_state": method.run_state(j),
        }

    @torch.no_grad()
    def load_run_state(self, r: int, state: dict) -> None:
        """Restore run ``r`` from :meth:`run_state` (all runs at the same step)."""
        i = int(self._position[r])
        method, j = self.method_of(r)
        if self.step > 0 and state["step"] != self.step:
            raise ValueError("runs trained in lockstep must all be at the same step")
        if state["optimizer"].keys() != self.state.keys():
            raise ValueError("checkpoint was made with another optimiser")
        if state.get("method") != method.name:
            raise ValueError(
                f"checkpoint of run {r} was made with method "
                f"{state.get('method')!r}, not {method.name!r}"
            )
        for p, saved in zip(self.params, state["params"]):
            p[i].copy_(saved)
        for name, buffers in self.state.items():
            for b, saved in zip(buffers, state["optimizer"][name]):
                b[i].copy_(saved)
        self.adam_step = state["adam_step"]
        self.generators[i].set_state(state["generator"])
        self.nets.step = state["step"]
        method.load_run_state(j, state["method_state"])

    # ------------------------------------------------------------------ views for the
    # tests
    @property
    def replacements(self) -> np.ndarray:
        """Units replaced so far per run and hidden layer (zero for methods that replace
        none)."""
        found = np.zeros((self.R, len(self.widths)), dtype=np.int64)
        for r in range(self.R):
            method, j = self.method_of(r)
            if hasattr(method, "replacements"):
                found[r] = method.replacements[j]
        return found
