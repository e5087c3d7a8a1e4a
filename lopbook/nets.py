"""The paper's two networks.

Both return their hidden activations on request (``forward(x, return_hidden=True)``),
which the plasticity metrics and continual backprop need, and list their weight
layers in order (``weight_layers()``): hidden layer ``l`` is the output of
``weight_layers()[l]`` and feeds ``weight_layers()[l + 1]``.

Initialisation (``init``):

* ``"kaiming"``: every layer Kaiming-uniform, ``U(-b, +b)`` with
  ``b = gain * sqrt(3 / fan_in)`` (``sqrt(6 / fan_in)`` for ReLU), and zero biases
  (the paper's description);
* ``"kaiming_linear_output"`` (MLP): as above, but the output layer with the linear
  gain, ``U(-sqrt(3/fan_in), +sqrt(3/fan_in))``: the authors' code;
* ``"pytorch_default"`` (ConvNet): PyTorch's default, weights and biases
  ``U(-1/sqrt(fan_in), +1/sqrt(fan_in))``: the authors' ConvNet sets none.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import make_generator

__all__ = ["MLP", "ConvNet", "kaiming_bound", "INITS", "ACTIVATIONS", "activate"]

NORMS = (None, "layer", "batch")
#: the MLP's activation functions and their squared Kaiming gains (as Nature's Methods
#: give them for the slowly-changing regression problem; leaky ReLU with slope 0.01)
GAINS_SQUARED = {
    "relu": 2.0,
    "leaky_relu": 2.0 / (1 + 0.01**2),
    "elu": 2.0,
    "swish": 2.0,
    "tanh": 25.0 / 9.0,
    "sigmoid": 1.0,
    "linear": 1.0,
}
ACTIVATIONS = tuple(GAINS_SQUARED)


def activate(z: torch.Tensor, activation: str) -> torch.Tensor:
    """The activation function ``activation`` applied to pre-activations ``z``."""
    if activation == "relu":
        return F.relu(z)
    if activation == "leaky_relu":
        return F.leaky_relu(z, 0.01)
    if activation == "elu":
        return F.elu(z)
    if activation == "swish":
        return F.silu(z)
    if activation == "tanh":
        return torch.tanh(z)
    if activation == "sigmoid":
        return torch.sigmoid(z)
    return z


INITS = {
    "MLP": ("kaiming", "kaiming_linear_output"),
    "ConvNet": ("kaiming", "pytorch_default"),
}


def kaiming_bound(layer: nn.Linear | nn.Conv2d) -> float:
    """Half-width of the Kaiming-uniform distribution for a ReLU layer: sqrt(6 /
    fan_in)."""
    return math.sqrt(6.0 / layer.weight[0].numel())


def _check(kind: str, dropout: float, norm: str | None, init: str) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if init not in INITS[kind]:
        raise ValueError(
            f"the {kind}'s init must be one of {INITS[kind]}, got {init!r}"
        )


def _dropout(
    h: torch.Tensor, p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Inverted dropout drawn from ``generator`` (every run owns its random stream)."""
    keep = torch.empty_like(h).bernoulli_(1.0 - p, generator=generator)
    return h * keep / (1.0 - p)


class _Net(nn.Module):
    """What both networks share: initialisation from a seed, their weight layers."""

    norms: nn.ModuleList | None
    init: str

    def weight_layers(self) -> list[nn.Linear | nn.Conv2d]:
        raise NotImplementedError

    def init_bounds(self) -> tuple[list[float], list[float]]:
        """Half-widths of the uniform distributions of each weight layer's initial
        weights and biases (0: zero biases)."""
        layers = self.weight_layers()
        fan_in = [layer.weight[0].numel() for layer in layers]
        if self.init == "pytorch_default":
            bounds = [1 / math.sqrt(f) for f in fan_in]
            return bounds, bounds
        gain2 = GAINS_SQUARED[getattr(self, "activation", "relu")]
        weights = [
            math.sqrt(3.0 * gain2 / f) for f in fan_in
        ]  # gain * sqrt(3 / fan_in)
        if self.init == "kaiming_linear_output":
            weights[-1] = math.sqrt(3.0 / fan_in[-1])
        return weights, [0.0] * len(layers)

    def reset_parameters(self, seed: int | None = None) -> None:
        """Draw all weights afresh (see ``init``); reset normalisation layers."""
        # drawn on the CPU, so that a seed gives the same network on every device
        generator = make_generator(seed) if seed is not None else None
        weight_bounds, bias_bounds = self.init_bounds()
        for layer, w_bound, b_bound in zip(
            self.weight_layers(), weight_bounds, bias_bounds
        ):
            weight = torch.empty_like(layer.weight, device="cpu")
            weight.uniform_(-w_bound, w_bound, generator=generator)
            with torch.no_grad():
                layer.weight.copy_(weight)
                if b_bound:
                    bias = torch.empty_like(layer.bias, device="cpu")
                    layer.bias.copy_(
                        bias.uniform_(-b_bound, b_bound, generator=generator)
                    )
                else:
                    layer.bias.zero_()
        if self.norms is not None:
            for norm in self.norms:
                norm.reset_parameters()
                if hasattr(norm, "reset_running_stats"):
                    norm.reset_running_stats()

    @property
    def hidden_sizes(self) -> list[int]:
        """Number of units in each hidden layer (a conv unit is a channel)."""
        return [layer.weight.shape[0] for layer in self.weight_layers()[:-1]]

    def _normalise(self, l: int, z: torch.Tensor) -> torch.Tensor:
        if self.norms is None:
            return z
        if self.norm == "batch" and self.training and z.shape[0] == 1:
            raise ValueError(
                "batch norm needs mini-batches of two or more examples; for a "
                "one-example-at-a-time stream use norm='layer'"
            )
        return self.norms[l](z)


class MLP(_Net):
    """Fully connected network for Online Permuted MNIST (ReLU) and the slowly-changing
    regression problem (any of ``ACTIVATIONS``; ``depth=0`` is a linear model).

    ``in_features`` -> ``depth`` hidden layers of ``width`` ReLU units ->
    ``out_features``.
    The paper uses 784 -> 3 x 2000 -> 10. Optional ``dropout`` after each hidden layer
    and ``norm`` ('layer' or 'batch') between each hidden linear layer and its ReLU.
    """

    def __init__(
        self,
        in_features: int = 784,
        width: int = 2000,
        depth: int = 3,
        out_features: int = 10,
        dropout: float = 0.0,
        norm: str | None = None,
        seed: int | None = None,
        init: str = "kaiming",
        activation: str = "relu",
    ):
        super().__init__()
        _check("MLP", dropout, norm, init)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {ACTIVATIONS}, got {activation!r}"
            )
        if min(in_features, width, out_features) < 1 or depth < 0:
            raise ValueError(
                "in_features, width and out_features must be >= 1, and depth >= 0"
            )
        if depth == 0 and (norm or dropout):
            raise ValueError("a network without hidden layers has no norm or dropout")
        self.in_features, self.width, self.depth = in_features, width, depth
        self.out_features, self.dropout, self.norm = out_features, dropout, norm
        self.init, self.activation = init, activation
        sizes = [in_features] + [width] * depth
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])
        )
        if norm == "layer":
            self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        elif norm == "batch":
            self.norms = nn.ModuleList(nn.BatchNorm1d(width) for _ in range(depth))
        else:
            self.norms = None
        self.output = nn.Linear(sizes[-1], out_features)
        self.reset_parameters(seed)

    def weight_layers(self) -> list[nn.Linear]:
        return [*self.hidden, self.output]

    def forward(
        self,
        x: torch.Tensor,
        return_hidden: bool = False,
        generator: torch.Generator | None = None,
    ):
        """Logits for ``x`` ([batch, in_features]); with ``return_hidden`` also the list
        of post-ReLU activations of the hidden layers."""
        hidden = []
        h = x
        for l, layer in enumerate(self.hidden):
            h = activate(self._normalise(l, layer(h)), self.activation)
            hidden.append(h)
            if self.training and self.dropout > 0:
                h = _dropout(h, self.dropout, generator)
        out = self.output(h)
        return (out, hidden) if return_hidden else out


class ConvNet(_Net):
    """The paper's ConvNet for Continual ImageNet (32x32 RGB inputs, binary tasks).

    conv 3->32 (5x5), conv 32->64 (3x3), conv 64->128 (3x3), each followed by ReLU
    and 2x2 max-pooling; then fully connected 512 -> 128 -> 128 -> ``n_classes``.
    The hidden activations of a conv layer are its pooled feature maps (what the
    next layer sees); a conv unit is a channel.
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 2,
        dropout: float = 0.0,
        norm: str | None = None,
        seed: int | None = None,
        init: str = "kaiming",
    ):
        super().__init__()
        _check("ConvNet", dropout, norm, init)
        if norm == "layer":
            raise ValueError("the ConvNet supports norm=None or 'batch'")
        self.dropout, self.norm, self.init = dropout, norm, init
        self.convs = nn.ModuleList(
            [nn.Conv2d(in_channels, 32, 5), nn.Conv2d(32, 64, 3), nn.Conv2d(64, 128, 3)]
        )
        self.fcs = nn.ModuleList([nn.Linear(128 * 2 * 2, 128), nn.Linear(128, 128)])
        if norm == "batch":
            self.norms = nn.ModuleList(
                [
                    nn.BatchNorm2d(32),
                    nn.BatchNorm2d(64),
                    nn.BatchNorm2d(128),
                    nn.BatchNorm1d(128),
                    nn.BatchNorm1d(128),
                ]
            )
        else:
            self.norms = None
        self.output = nn.Linear(128, n_classes)
        self.reset_parameters(seed)

    def weight_layers(self) -> list[nn.Conv2d | nn.Linear]:
        return [*self.convs, *self.fcs, self.output]

    def reset_output(self) -> None:
        """Zero the output layer, as the paper does at the start of every task."""
        with torch.no_grad():
            self.output.weight.zero_()
            self.output.bias.zero_()

    def forward(
        self,
        x: torch.Tensor,
        return_hidden: bool = False,
        generator: torch.Generator | None = None,
    ):
        """Logits for ``x`` ([batch, 3, 32, 32]); with ``return_hidden`` also the
        hidden activations."""
        if x.dim() != 4 or x.shape[-2:] != (32, 32):
            raise ValueError(
                "ConvNet expects images of shape [batch, channels, 32, 32], "
                f"got {tuple(x.shape)}"
            )
        hidden = []
        h = x
        for l, conv in enumerate(self.convs):
            h = F.max_pool2d(F.relu(self._normalise(l, conv(h))), 2)
            hidden.append(h)
        h = h.flatten(1)
        for l, fc in enumerate(self.fcs, start=len(self.convs)):
            h = F.relu(self._normalise(l, fc(h)))
            hidden.append(h)
            if self.training and self.dropout > 0:
                h = _dropout(h, self.dropout, generator)
        out = self.output(h)
        return (out, hidden) if return_hidden else out
