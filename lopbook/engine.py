"""Many runs in lockstep: R independent networks trained as one batched model.

The paper averages 30 runs per setting, and Online Permuted MNIST learns one example at a time: trained the
usual way (one network per process, autograd and ``torch.optim`` at batch size 1), a step costs far more in
per-call overhead than in arithmetic. :class:`Lockstep` stacks the weights of R runs (``[R, out, in]``) and
steps them together with batched matrix products, so one kernel call serves every run. Each run keeps its own
seed (initial weights and random stream), data, step size, momentum, weight decay, noise and replacement rate;
the optimiser (SGD or Adam) and the network's shape are shared.

For the MLP the forward and backward passes are written out by hand (no autograd graph per example) and plain
SGD is fused into the backward pass; the ConvNet uses grouped convolutions and autograd. The learners in
:mod:`lopbook.learners` stay the readable reference: the tests check that R runs here give the same numbers as
the same R runs done one by one there.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .learners import UTILITIES, lowest_utility
from .metrics import PlasticityMetrics, metrics_from_activations
from .nets import MLP, ConvNet, kaiming_bound
from .runtime import make_generator

__all__ = ["RunSettings", "Lockstep"]

_threshold_backward = torch.ops.aten.threshold_backward


@dataclass
class RunSettings:
    """What may differ between the runs trained together (zero switches a mechanism off)."""

    seed: int                      # seeds the run's random stream (dropout masks, noise, new units)
    step_size: float
    momentum: float = 0.0          # SGD only
    weight_decay: float = 0.0      # L2 penalty (the "shrink" of Shrink-and-Perturb)
    noise_std: float = 0.0         # Gaussian noise added to every parameter after each step ("perturb")
    replacement_rate: float = 0.0  # continual backprop; 0 is plain backprop


class Lockstep:
    """R runs of an :class:`~lopbook.nets.MLP` or :class:`~lopbook.nets.ConvNet` trained in lockstep.

    Parameters
    ----------
    nets : the R initial networks (same architecture, no normalisation layers); their weights are copied.
    runs : one :class:`RunSettings` per network.
    optimizer, betas : ``"sgd"`` or ``"adam"``, shared by all runs.
    maturity_threshold, decay_rate, utility : continual backprop's settings, shared by all runs.
    """

    def __init__(self, nets: list, runs: list[RunSettings], optimizer: str = "sgd",
                 betas: tuple[float, float] = (0.9, 0.999), maturity_threshold: int = 100,
                 decay_rate: float = 0.99, utility: str = "contribution", device=None):
        if len(nets) != len(runs) or not nets:
            raise ValueError("give one RunSettings per network, and at least one network")
        kind = type(nets[0])
        if kind not in (MLP, ConvNet) or any(type(n) is not kind for n in nets):
            raise ValueError("all networks must be lopbook MLPs, or all lopbook ConvNets")
        if not all(Lockstep.supports(n) for n in nets):
            raise ValueError("the lockstep engine supports layer norm in the MLP and no other normalisation; train "
                             "those runs with the reference learners (backend='reference')")
        shapes = {tuple(tuple(p.shape) for p in n.parameters()) for n in nets}
        if len(shapes) != 1 or len({n.dropout for n in nets}) != 1 or len({n.norm for n in nets}) != 1:
            raise ValueError("all networks must have the same architecture, dropout and normalisation")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        if utility not in UTILITIES:
            raise ValueError(f"utility must be one of {UTILITIES}, got {utility!r}")
        for r in runs:
            if not r.step_size > 0 or r.weight_decay < 0 or r.noise_std < 0 or not 0 <= r.momentum < 1:
                raise ValueError(f"invalid run settings {r}")
            if not 0.0 <= r.replacement_rate <= 1.0:
                raise ValueError(f"replacement_rate must be in [0, 1], got {r.replacement_rate}")
            if optimizer == "adam" and r.momentum:
                raise ValueError("momentum is an SGD setting; Adam uses betas")

        self.device = torch.device(device) if device is not None else next(nets[0].parameters()).device
        self.conv = kind is ConvNet
        self.runs = list(runs)
        self.R = R = len(runs)
        self.optimizer, self.betas = optimizer, betas
        self.maturity_threshold, self.decay_rate, self.utility_type = maturity_threshold, decay_rate, utility
        self.dropout = nets[0].dropout
        layers = [n.weight_layers() for n in nets]
        self.bounds = [kaiming_bound(layer) for layer in layers[0]]
        self.weights = [torch.stack([ls[i].weight.detach() for ls in layers]).to(self.device).contiguous()
                        for i in range(len(layers[0]))]
        self.biases = [torch.stack([ls[i].bias.detach() for ls in layers]).to(self.device).contiguous()
                       for i in range(len(layers[0]))]
        self.widths = [w.shape[1] for w in self.weights[:-1]]
        # layer norm's per-unit gain and shift, [R, units] per hidden layer
        self.layer_norm = nets[0].norm == "layer"
        norms = [[n.norms[l] for n in nets] for l in range(len(self.widths))] if self.layer_norm else []
        self.gains = [torch.stack([m.weight.detach() for m in ms]).to(self.device).contiguous() for ms in norms]
        self.shifts = [torch.stack([m.bias.detach() for m in ms]).to(self.device).contiguous() for ms in norms]
        # all parameters in the nets' order: hidden layers, normalisation layers, output layer
        self.params = [p for pair in zip(self.weights[:-1], self.biases[:-1]) for p in pair]
        self.params += [p for pair in zip(self.gains, self.shifts) for p in pair]
        self.params += [self.weights[-1], self.biases[-1]]
        position = {id(p): i for i, p in enumerate(self.params)}
        self._w = [position[id(w)] for w in self.weights]      # index in self.params of each layer's weight
        self._b = [position[id(b)] for b in self.biases]
        self._g = [position[id(g)] for g in self.gains]
        self._s = [position[id(b)] for b in self.shifts]
        self.n_outputs = self.weights[-1].shape[1]
        self.generators = [make_generator(r.seed, self.device) for r in runs]

        self.dtype = self.weights[0].dtype

        def column(values, dims):
            return torch.tensor(values, dtype=self.dtype, device=self.device).view(R, *[1] * dims)

        self._lr = [column([r.step_size for r in runs], p.dim() - 1) for p in self.params]
        self._wd = [column([r.weight_decay for r in runs], p.dim() - 1) for p in self.params]
        self._decay = [-lr * wd for lr, wd in zip(self._lr, self._wd)]     # w <- w + w * decay: weight decay
        self._lr_out = column([r.step_size for r in runs], 2)
        self.any_weight_decay = any(r.weight_decay > 0 for r in runs)
        self.any_momentum = any(r.momentum > 0 for r in runs)
        self.any_noise = any(r.noise_std > 0 for r in runs)
        self.replacement_rate = np.array([r.replacement_rate for r in runs], dtype=np.float64)
        self.any_replacement = bool((self.replacement_rate > 0).any())
        self.fused_sgd = optimizer == "sgd" and not self.any_momentum and not self.conv
        self._minus_one = torch.full((1, 1, 1), -1.0, device=self.device, dtype=self.dtype)

        # Optimiser state and gradients live in flat [R, all parameters] buffers, so that the update is a handful
        # of operations whatever the number of layers; self.state[name][i] is the view of parameter i.
        self._sizes = [p[0].numel() for p in self.params]
        total = sum(self._sizes)
        names = {"adam": ["exp_avg", "exp_avg_sq"], "sgd": ["momentum_buffer"] if self.any_momentum else []}
        self._flat_state = {name: torch.zeros(R, total, device=self.device, dtype=self.dtype)
                            for name in names[optimizer]}
        self.state = {name: self._views(flat) for name, flat in self._flat_state.items()}
        self._flat_grad = torch.zeros(R, total, device=self.device, dtype=self.dtype)
        self._grad_views = self._views(self._flat_grad)
        self.adam_step = 0
        flat_column = lambda values: torch.tensor(values, dtype=self.dtype, device=self.device).view(R, 1)
        self._flat_lr = flat_column([r.step_size for r in runs])
        self._flat_momentum = flat_column([r.momentum for r in runs])
        self._neg_lr = [-lr for lr in self._lr]
        # Shrink-and-Perturb: one draw of noise per run and step, for all its parameters at once
        self._noise = torch.zeros(R, total, device=self.device, dtype=self.dtype) if self.any_noise else None
        self._noise_views = self._views(self._noise) if self.any_noise else []
        self._noise_std = [column([r.noise_std for r in runs], p.dim() - 1) for p in self.params]
        # continual backprop state: per run and hidden unit; ages are kept as the step of the unit's birth
        self.step = 0
        self.utility = [torch.zeros(R, n, device=self.device, dtype=self.dtype) for n in self.widths]
        self.mean_activation = [torch.zeros(R, n, device=self.device, dtype=self.dtype) for n in self.widths]
        self.birth = [torch.zeros(R, n, dtype=torch.long, device=self.device) for n in self.widths]
        self.accumulated = np.zeros((R, len(self.widths)), dtype=np.float64)
        self.replacements = np.zeros((R, len(self.widths)), dtype=np.int64)
        self._recent = deque()        # replacement counts of the last maturity_threshold steps
        self._recent_sum = np.zeros((R, len(self.widths)), dtype=np.int64)
        if self.conv:
            for p in self.params:
                p.requires_grad_(True)

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of a flat ``[R, all parameters]`` buffer shaped like each parameter (``[R, ...]``)."""
        views, start = [], 0
        for p, n in zip(self.params, self._sizes):
            views.append(flat[:, start:start + n].view(p.shape))
            start += n
        return views

    @staticmethod
    def supports(net) -> bool:
        """Whether the engine can train ``net`` (no normalisation, or layer norm in the MLP)."""
        return net.norms is None or (isinstance(net, MLP) and net.norm == "layer")

    # ------------------------------------------------------------------ forward passes
    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        keep = torch.empty_like(h)
        for r, g in enumerate(self.generators):
            keep[r].bernoulli_(1.0 - self.dropout, generator=g)
        return keep

    def forward(self, x: torch.Tensor, train: bool = False):
        """Logits ``[R, B, outputs]`` for inputs ``x`` (``[R, B, ...]``), the hidden activations, the inputs of
        every layer and the dropout masks (empty when not training)."""
        p = self.dropout if train else 0.0
        hidden, inputs, keeps = [], [], []
        h = x
        if self.conv and x.is_cuda:
            # the R runs' convolutions as one grouped convolution: runs are groups of channels
            R, B = x.shape[:2]
            h = x.transpose(0, 1).reshape(B, R * x.shape[2], *x.shape[3:])
            for w, b in zip(self.weights[:3], self.biases[:3]):
                h = F.max_pool2d(F.relu(F.conv2d(h, w.flatten(0, 1), b.flatten(), groups=R)), 2)
                hidden.append(h.view(B, R, -1, *h.shape[2:]).transpose(0, 1))
            h = h.view(B, R, -1).transpose(0, 1)
            start = 3
        elif self.conv:
            # on the CPU a convolution of a batch of 100 is big enough on its own, and grouped ones are slower
            per_run = list(x)
            for w, b in zip(self.weights[:3], self.biases[:3]):
                per_run = [F.max_pool2d(F.relu(F.conv2d(h, w[r], b[r])), 2) for r, h in enumerate(per_run)]
                hidden.append(torch.stack(per_run))
            h = hidden[-1].flatten(2)
            start = 3
        else:
            start = 0
        self._norm_cache = []
        for l, (w, b) in enumerate(zip(self.weights[start:-1], self.biases[start:-1]), start=start):
            inputs.append(h)
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if self.layer_norm:
                z = h
                normed, mean, rstd = torch.native_layer_norm(z, [z.shape[-1]], None, None, 1e-5)
                h = torch.addcmul(self.shifts[l].unsqueeze(1), normed, self.gains[l].unsqueeze(1))
                self._norm_cache.append((z, normed, mean, rstd))
            h = h.relu_()
            hidden.append(h)
            if p > 0:
                keep = self._dropout(h)
                keeps.append(keep)
                h = h * keep / (1.0 - p)
        inputs.append(h)
        out = torch.baddbmm(self.biases[-1].unsqueeze(1), h, self.weights[-1].transpose(1, 2))
        return out, hidden, inputs, keeps

    # ------------------------------------------------------------------ one step
    def learn(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One update of every run on its batch (``x``: ``[R, B, ...]``, ``y``: ``[R, B]``).

        Returns the logits computed before the update (``[R, B, outputs]``), as the learners' ``learn`` does.
        """
        if self.conv:
            out, hidden = self._backward_autograd(x, y)
        else:
            out, hidden = self._backward_mlp(x, y)
        self.step += 1
        if self.any_noise:
            self._perturb()
        if self.any_replacement:
            self._continual_backprop(hidden)
        return out

    def _backward_autograd(self, x, y):
        with torch.enable_grad():
            out, hidden, _, _ = self.forward(x, train=True)
            R, B, C = out.shape
            loss = F.cross_entropy(out.reshape(R * B, C), y.reshape(R * B), reduction="sum") / B
            grads = torch.autograd.grad(loss, self.params)
        with torch.no_grad():
            self._update(grads)
        return out.detach(), [h.detach() for h in hidden]

    @torch.no_grad()
    def _backward_mlp(self, x, y):
        out, hidden, inputs, keeps = self.forward(x, train=True)
        B = x.shape[1]
        g = torch.softmax(out, dim=-1)                 # d(cross-entropy)/d(logits) = softmax - one-hot
        g.scatter_add_(2, y.unsqueeze(2), self._minus_one.expand(*y.shape, 1))
        if B > 1:
            g.div_(B)
        L = len(self.weights)
        if self.fused_sgd:
            g.mul_(self._lr_out)      # every layer's gradient is now scaled by its run's step size
            for l in reversed(range(L)):
                w, b = self.weights[l], self.biases[l]
                g_in = torch.bmm(g, w) if l > 0 else None
                if self.any_weight_decay:
                    w.addcmul_(w, self._decay[self._w[l]])
                    b.addcmul_(b, self._decay[self._b[l]])
                w.baddbmm_(g.transpose(1, 2), inputs[l], alpha=-1.0)
                b.sub_(g[:, 0] if B == 1 else g.sum(1))
                if l > 0:
                    g = self._relu_backward(g_in, hidden[l - 1], keeps, l - 1)
                    if self.layer_norm:
                        g, d_gain, d_shift = self._norm_backward(g, l - 1)
                        if self.any_weight_decay:
                            self.gains[l - 1].addcmul_(self.gains[l - 1], self._decay[self._g[l - 1]])
                            self.shifts[l - 1].addcmul_(self.shifts[l - 1], self._decay[self._s[l - 1]])
                        self.gains[l - 1].sub_(d_gain)
                        self.shifts[l - 1].sub_(d_shift)
        else:
            grads = [None] * len(self.params)
            for l in reversed(range(L)):
                grads[self._w[l]] = torch.bmm(g.transpose(1, 2), inputs[l])
                grads[self._b[l]] = g.sum(1)
                if l > 0:
                    g = self._relu_backward(torch.bmm(g, self.weights[l]), hidden[l - 1], keeps, l - 1)
                    if self.layer_norm:
                        g, grads[self._g[l - 1]], grads[self._s[l - 1]] = self._norm_backward(g, l - 1)
            self._update(grads)
        return out, hidden

    def _norm_backward(self, g, l):
        """Through layer norm: the gradients with respect to its input, gain and shift."""
        z, normed, mean, rstd = self._norm_cache[l]
        d_gain = (g * normed).sum(1)
        d_shift = g.sum(1)
        g = torch.ops.aten.native_layer_norm_backward(g * self.gains[l].unsqueeze(1), z, [z.shape[-1]], mean, rstd,
                                                      None, None, [True, False, False])[0]
        return g, d_gain, d_shift

    def _relu_backward(self, g, h, keeps, l):
        if keeps:
            g = g * keeps[l] / (1.0 - self.dropout)
        return _threshold_backward(g, h, 0)

    def _update(self, grads) -> None:
        """SGD (momentum, weight decay) or Adam, as ``torch.optim`` does it, with per-run hyperparameters.

        The gradients are gathered into one flat buffer, updated there in a few operations, and added back."""
        torch._foreach_copy_(self._grad_views, list(grads))
        if self.any_weight_decay:
            torch._foreach_addcmul_(self._grad_views, self.params, self._wd)    # grad + weight_decay * w
        grad = self._flat_grad
        if self.optimizer == "adam":
            self.adam_step += 1
            beta1, beta2 = self.betas
            c1 = 1 - beta1 ** self.adam_step
            c2 = math.sqrt(1 - beta2 ** self.adam_step)
            m, v = self._flat_state["exp_avg"], self._flat_state["exp_avg_sq"]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / c2).add_(1e-8)
            torch.div(m, denom, out=grad).mul_(self._flat_lr / -c1)     # the step, into the gradient's buffer
            torch._foreach_add_(self.params, self._grad_views)
            return
        step = self._grad_views
        if self.any_momentum:
            self._flat_state["momentum_buffer"].mul_(self._flat_momentum).add_(grad)
            step = self.state["momentum_buffer"]
        torch._foreach_addcmul_(self.params, step, self._neg_lr)                # w - step_size * step

    # ------------------------------------------------------------------ shrink-and-perturb, continual backprop
    @torch.no_grad()
    def _perturb(self) -> None:
        noisy = [r for r, run in enumerate(self.runs) if run.noise_std > 0]
        for r in noisy:
            self._noise[r].normal_(generator=self.generators[r])      # one draw for all the run's parameters
        if len(noisy) == self.R:
            torch._foreach_add_(self.params, torch._foreach_mul(self._noise_views, self._noise_std))
        else:                                                          # only the runs that have noise
            for r in noisy:
                noise = torch._foreach_mul([n[r] for n in self._noise_views], self.runs[r].noise_std)
                torch._foreach_add_([p[r] for p in self.params], noise)

    def _replacement_counts(self) -> np.ndarray:
        """How many units each run replaces in each layer now (decided on the host: no device sync).

        A unit is eligible when older than the maturity threshold; a unit replaced at step s' is eligible
        again after step s' + m, so the eligible count is the width minus what the last m steps replaced.
        """
        m = self.maturity_threshold
        if self.step > m:
            eligible = np.asarray(self.widths)[None, :] - self._recent_sum
        else:
            eligible = np.zeros_like(self._recent_sum)
        self.accumulated += self.replacement_rate[:, None] * eligible
        k = np.floor(self.accumulated).astype(np.int64)
        self.accumulated -= k
        if m > 0:
            if len(self._recent) == m:
                self._recent_sum -= self._recent.popleft()
            self._recent.append(k)
            self._recent_sum += k
        return k

    def _abs_sum(self, outgoing: torch.Tensor) -> torch.Tensor:
        """Sum of |outgoing weights| of every unit (``[R, outputs, units, positions]`` -> ``[R, units]``). On a GPU one
        reduction kernel, without the temporary |w| (the sum reads every weight once more per step); on the CPU
        abs-then-sum is the faster of the two."""
        if outgoing.is_cuda:
            return torch.linalg.vector_norm(outgoing, ord=1, dim=(1, 3))
        return outgoing.abs().sum(dim=(1, 3))

    def _outgoing(self, tensor: torch.Tensor, n: int) -> torch.Tensor:
        return tensor.view(tensor.shape[0], tensor.shape[1], n, -1)

    @torch.no_grad()
    def _continual_backprop(self, hidden) -> None:
        k = self._replacement_counts()
        d = self.decay_rate
        for l, h in enumerate(hidden):
            n = self.widths[l]
            dims = [1] + list(range(3, h.dim()))          # batch (and space): [R, B, n, ...]
            outgoing = self._outgoing(self.weights[l + 1], n)
            if self.utility_type == "contribution":
                # activations are ReLU outputs, so |h| = h; one example: no mean to take
                activity = h[:, 0] if h.dim() == 3 and h.shape[1] == 1 else h.mean(dim=dims)
                contribution = activity * self._abs_sum(outgoing)
            else:
                outgoing = outgoing.abs()
                age = self.step - self.birth[l]
                self.mean_activation[l].mul_(d).add_(h.mean(dim=dims), alpha=1 - d)
                mean = self.mean_activation[l] / (1 - d ** age)
                deviation = (h - mean.view(self.R, 1, n, *[1] * (h.dim() - 3))).abs().mean(dim=dims)
                incoming = self.weights[l].abs().view(self.R, n, -1).mean(dim=2)
                contribution = deviation * outgoing.mean(dim=(1, 3)) / incoming
            self.utility[l].mul_(d).add_(contribution, alpha=1 - d)
            if k[:, l].any():
                self._reinitialise(l, k[:, l])

    def _reinitialise(self, l: int, k: np.ndarray) -> None:
        runs = np.flatnonzero(k)
        counts = k[runs]
        age = self.step - self.birth[l][runs]
        utility = self.utility[l][runs] / (1 - self.decay_rate ** age)
        order = lowest_utility(utility, age > self.maturity_threshold, int(counts.max()))
        which = torch.as_tensor(np.repeat(np.arange(len(runs)), counts), device=self.device)
        position = torch.as_tensor(np.concatenate([np.arange(c) for c in counts]), device=self.device)
        units = order[which, position]
        run_index = torch.as_tensor(np.repeat(runs, counts), device=self.device)
        w_in, b_in, w_out = self.weights[l], self.biases[l], self.weights[l + 1]
        bound = self.bounds[l]
        fresh = torch.cat([torch.empty((c, *w_in.shape[2:]), device=self.device, dtype=self.dtype)
                           .uniform_(-bound, bound, generator=self.generators[r]) for r, c in zip(runs, counts)])
        n = self.widths[l]
        w_in[run_index, units] = fresh
        b_in[run_index, units] = 0.0
        self._outgoing(w_out, n)[run_index, :, units] = 0.0
        rows = [self._w[l], self._b[l]]
        if self.layer_norm:
            self.gains[l][run_index, units] = 1.0
            self.shifts[l][run_index, units] = 0.0
            rows += [self._g[l], self._s[l]]
        for buffers in self.state.values():
            for i in rows:
                buffers[i][run_index, units] = 0.0
            self._outgoing(buffers[self._w[l + 1]], n)[run_index, :, units] = 0.0
        self.utility[l][run_index, units] = 0.0
        self.mean_activation[l][run_index, units] = 0.0
        self.birth[l][run_index, units] = self.step
        self.replacements[runs, l] += counts

    # ------------------------------------------------------------------ what the experiments call
    @torch.no_grad()
    def train_online(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Learn from ``x[:, i]`` (``[R, n, ...]``) one example at a time; returns, per run, how many
        predictions made before each update were right (a device tensor: nothing is read back per step)."""
        n = x.shape[1]
        predictions = torch.empty(self.R, n, dtype=torch.long, device=self.device)
        for i in range(n):
            out = self.learn(x[:, i:i + 1], y[:, i:i + 1])
            torch.argmax(out[:, 0], dim=-1, out=predictions[:, i])
        return (predictions == y).sum(dim=1)

    def train_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One mini-batch update of every run; returns the number of correct predictions made before it."""
        out = self.learn(x, y)
        return (out.argmax(dim=-1) == y).sum(dim=1)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Number of correct predictions of each run on ``x`` (``[R, N, ...]``), without dropout."""
        correct = torch.zeros(self.R, dtype=torch.long, device=self.device)
        for i in range(0, x.shape[1], batch_size):
            out = self.forward(x[:, i:i + batch_size])[0]
            correct += (out.argmax(dim=-1) == y[:, i:i + batch_size]).sum(dim=1)
        return correct

    @torch.no_grad()
    def metrics(self, probe: torch.Tensor) -> list[PlasticityMetrics]:
        """Dead units, weight magnitude and effective rank of each run on its probe batch (``[R, N, ...]``)."""
        hidden = self.forward(probe)[1]
        return [metrics_from_activations([h[r] for h in hidden], [w[r] for w in self.weights])
                for r in range(self.R)]

    @torch.no_grad()
    def reset_head(self) -> None:
        """Zero the output layer and its optimiser state (Continual ImageNet does this at every new task)."""
        for i in (len(self.params) - 2, len(self.params) - 1):
            self.params[i].zero_()
            for buffers in self.state.values():
                buffers[i].zero_()

    # ------------------------------------------------------------------ checkpoints, one run at a time
    def run_state(self, r: int) -> dict:
        """Everything run ``r`` needs to continue exactly where it is."""
        return {
            "params": [p[r].detach().clone().cpu() for p in self.params],
            "optimizer": {name: [b[r].clone().cpu() for b in buffers] for name, buffers in self.state.items()},
            "adam_step": self.adam_step,
            "generator": self.generators[r].get_state(),
            "step": self.step,
            "utility": [u[r].clone().cpu() for u in self.utility],
            "mean_activation": [a[r].clone().cpu() for a in self.mean_activation],
            "age": [(self.step - b[r]).cpu() for b in self.birth],
            "accumulated": self.accumulated[r].copy(),
            "recent": np.array([k[r] for k in self._recent], dtype=np.int64).reshape(-1, len(self.widths)),
            "replacements": self.replacements[r].copy(),
        }

    @torch.no_grad()
    def load_run_state(self, r: int, state: dict) -> None:
        """Restore run ``r`` from :meth:`run_state` (all runs of an engine must be at the same step)."""
        if (self.step > 0 or any(b.abs().sum() for b in self.birth)) and state["step"] != self.step:
            raise ValueError("runs trained in lockstep must all be at the same step")
        if state["optimizer"].keys() != self.state.keys():
            raise ValueError("checkpoint was made with another optimiser")
        for p, saved in zip(self.params, state["params"]):
            p[r].copy_(saved)
        for name, buffers in self.state.items():
            for b, saved in zip(buffers, state["optimizer"][name]):
                b[r].copy_(saved)
        self.adam_step = state["adam_step"]
        self.generators[r].set_state(state["generator"])
        self.step = state["step"]
        for l in range(len(self.widths)):
            self.utility[l][r].copy_(state["utility"][l])
            self.mean_activation[l][r].copy_(state["mean_activation"][l])
            self.birth[l][r].copy_(self.step - state["age"][l].to(self.device))
        self.accumulated[r] = state["accumulated"]
        recent = state["recent"]
        if len(self._recent) != len(recent):
            self._recent = deque(np.zeros((self.R, len(self.widths)), dtype=np.int64) for _ in range(len(recent)))
        for k, saved in zip(self._recent, recent):
            k[r] = saved
        self._recent_sum = sum(self._recent, np.zeros((self.R, len(self.widths)), dtype=np.int64))
        self.replacements[r] = state["replacements"]
