"""Slowly-changing regression: the paper's small synthetic regression stream.

Dohare et al. (Nature, 2024), Methods ("Loss of plasticity with different
activations in the Slowly-Changing Regression problem") and Extended Data
Fig. 2; the authors' code calls it the bit-flipping problem.  The data are
synthetic by design: a fixed random *target network* labels a stream of
binary inputs whose distribution drifts slowly.

The problem (``m`` = ``n_inputs``, ``f`` = ``n_slow``, ``n`` = ``hidden``):

* **Input.** ``x~ = (x_1, ..., x_m, 1)``: ``f`` slow bits, ``m - f`` fast bits
  drawn uniformly at random for every example, then one constant bit.  The
  slow bits stay fixed for ``T = change_every`` examples; Nature: "After every
  T examples, one of the first f bits is chosen uniformly at random and its
  value is flipped" (``change="flip_one"``, the default).  The authors' code
  by default instead redraws all ``f`` bits uniformly every ``T`` examples
  (``change="redraw_all"``; on average ``f/2`` bits change, possibly none).
* **Target network.** ``n`` linear threshold units (LTUs) on ``x~``, weights
  ``W`` in ``{-1, +1}^(n x (m+1))`` (the last column, the weight on the
  constant bit, is each LTU's bias), and output weights ``v`` in
  ``{-1, +1}^n``.  With ``threshold_rule="nature"`` (default)::

      S_i     = number of -1 entries of W_i (all m + 1 of them)
      theta_i = beta * (m + 1) - S_i
      f_i(x~) = 1 if W_i . x~ > theta_i else 0
      y       = sum_i v_i f_i(x~)            (an integer in [-n, n])

  Nature: "The threshold theta_i is set to be equal to (m + 1) x beta - S_i,
  in which beta in [0, 1] and S_i is the number of input weights with
  negative value", and "Each weight in the target network is -1 or 1"; no
  output bias is described.  Since ``W_i . x~ + S_i`` counts the bits of
  ``x~`` that agree with the unit's prototype ``(W_i + 1) / 2``, LTU ``i``
  fires when more than a fraction ``beta`` of the ``m + 1`` bits agree.
  ``threshold_rule="authors_code"`` follows the authors' code instead: there
  ``S_i`` counts the -1 weights among the first ``m`` only and adds half the
  bias weight (``S_i = #{j <= m: W_ij = -1} + W_i,m+1 / 2``), and the output
  has a bias ``c`` in ``{-1, +1}`` (``y`` in ``[-n-1, n+1]``).  The two rules
  agree for LTUs with bias +1; one with bias -1 needs 17 rather than 15
  agreements of 21 at ``beta = 0.7``.

Defaults are the paper's instance: ``m = 20``, ``f = 15``, ``n = 100``,
``beta = 0.7``, ``T = 10,000`` (Nature runs 3 million examples and bins the
squared error over 40,000; the learner has one hidden layer of 5 units).

**Random numbers.** Everything is a deterministic function of ``seed`` and
the position in the stream, drawn from ``np.random.SeedSequence(seed,
spawn_key=key)`` generators, never a global one: key ``(0, 0)`` the target
network (``W``, then ``v``, then ``c``, whatever the change mode and rule),
``(3, 0)`` the slow bits of period 0, ``(2, c)`` the changes of periods
``1024 c ... 1024 c + 1023`` (``flip_one``: the index of the flipped bit of
each period; ``redraw_all``: the bits of each period; the draw for period 0
is unused), and ``(1, b)`` the fast bits of examples ``10000 b ... 10000 b +
9999``.  A run resumed in the middle therefore sees the same examples.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from .errors import check_index

__all__ = [
    "SlowlyChangingRegression",
    "ltu_thresholds",
    "ltu_target",
    "CHANGE_MODES",
    "THRESHOLD_RULES",
]

#: How the slow bits change every ``change_every`` examples.
CHANGE_MODES = ("flip_one", "redraw_all")
#: How the LTU thresholds are set: Nature's formula or the authors' code.
THRESHOLD_RULES = ("nature", "authors_code")

#: Examples whose fast bits come from one generator (part of the stream's
#: definition: changing it changes every stream; then bump ``_SCHEME``).
FAST_BLOCK = 10_000
#: Change periods whose slow-bit changes come from one generator (ditto).
SLOW_CHUNK = 1024
_SCHEME = "gen1"
_NET, _FAST, _SLOW, _START = 0, 1, 2, 3  # first entry of each spawn key
_ROWS = 1 << 16  # rows per matmul in ltu_target (bounds its memory)
_CACHED = 4  # generated blocks / chunks kept for reuse
_TABLE_BITS = 12  # up to 2^12 fast patterns: examples() tabulates the target


def _signs(weights, what: str) -> torch.Tensor:
    w = torch.as_tensor(weights)
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(f"{what} must be a 2-D [hidden, inputs + 1] array of -1/+1")
    w = w.to(torch.float64)
    if not bool(((w == 1) | (w == -1)).all()):
        raise ValueError(f"{what} must hold only -1 and +1")
    return w


def _check_beta(beta) -> float:
    if isinstance(beta, (bool, np.bool_)) or not isinstance(
        beta, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
    return float(beta)


def ltu_thresholds(weights, beta: float, rule: str = "nature") -> torch.Tensor:
    """Thresholds ``theta_i`` of LTUs with ``{-1, +1}`` weights.

    Parameters
    ----------
    weights : array or tensor
        ``[hidden, m + 1]``; column ``m`` (the last) is the weight on the
        constant input bit, i.e. each LTU's bias.
    beta : float
        In ``[0, 1]``; ``beta * (m + 1)`` is rounded to 9 decimals so that a
        product meant to be an integer (``0.1 * 30``) is one.
    rule : str
        ``"nature"``: ``theta_i = beta (m + 1) - S_i`` with ``S_i`` the number
        of -1 weights of unit ``i`` (bias weight included).
        ``"authors_code"``: ``S_i`` = the number of -1 weights among the first
        ``m`` plus half the bias weight.

    Returns
    -------
    torch.Tensor
        ``float64 [hidden]``.
    """
    w = _signs(weights, "weights")
    level = round(_check_beta(beta) * w.shape[1], 9)
    if rule == "nature":
        negatives = (w < 0).sum(1).to(torch.float64)
    elif rule == "authors_code":
        negatives = (w[:, :-1] < 0).sum(1).to(torch.float64) + w[:, -1] / 2
    else:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    return level - negatives


def ltu_target(
    x, weights, thresholds, output_weights, output_bias: float = 0.0
) -> torch.Tensor:
    """``y = sum_i v_i [W_i . x > theta_i] + c`` for binary ``x``, exactly.

    Parameters
    ----------
    x : tensor or array
        ``[N, m + 1]`` with entries in ``{0, 1}`` (the constant bit included,
        as the last column); any float or integer dtype.
    weights, thresholds, output_weights, output_bias
        ``W [hidden, m + 1]``, ``theta [hidden]``, ``v [hidden]``, ``c``.

    Returns
    -------
    torch.Tensor
        ``float32 [N]`` on ``x``'s device.  ``W_i . x`` is an integer, so the
        strict comparison is made as ``W_i . x >= floor(theta_i) + 1``, which
        no rounding of ``theta_i`` can change.
    """
    x = torch.as_tensor(x)
    w = torch.as_tensor(weights)
    if x.ndim != 2 or x.shape[1] != w.shape[-1]:
        raise ValueError(
            f"x must be [N, {w.shape[-1]}] (inputs and the constant bit), "
            f"got {tuple(x.shape)}"
        )
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError("x must hold only 0 and 1")
    return _ltu_target(x, w, thresholds, output_weights, output_bias)


def _ltu_target(x, weights, thresholds, output_weights, output_bias) -> torch.Tensor:
    device = x.device
    w = torch.as_tensor(weights).to(device, torch.float32)
    theta = torch.as_tensor(thresholds, dtype=torch.float64)
    cut = (torch.floor(theta) + 1).to(device, torch.float32)
    v = torch.as_tensor(output_weights).to(device, torch.float32)
    x = x.to(torch.float32)
    y = torch.empty(x.shape[0], dtype=torch.float32, device=device)
    for lo in range(0, x.shape[0], _ROWS):
        fired = (x[lo : lo + _ROWS] @ w.T >= cut).to(torch.float32)
        y[lo : lo + _ROWS] = fired @ v
    return y + float(output_bias)


class SlowlyChangingRegression:
    """The slowly-changing regression stream of one seed (see the module text).

    Parameters
    ----------
    seed : int
        Non-negative seed of the run: its target network and its examples.
    n_inputs : int
        ``m``, the binary inputs besides the constant bit (20).
    n_slow : int
        ``f``, the slow bits, the first ``f`` inputs (15); ``1 <= f <= m``.
    hidden : int
        LTUs of the target network (100).
    beta : float
        Threshold level in ``[0, 1]`` (0.7).
    change_every : int
        ``T``, examples between changes of the slow bits (10,000).
    change : str
        ``"flip_one"`` (Nature, default): one slow bit chosen uniformly is
        flipped; ``"redraw_all"`` (the authors' code default): all slow bits
        are redrawn uniformly.
    bias_input : bool
        Whether ``x`` carries the constant bit as its last column (True, as
        Nature's input of ``m + 1`` bits).  The target network always sees it.
    threshold_rule : str
        ``"nature"`` (default) or ``"authors_code"``; see :func:`ltu_thresholds`.

    Attributes
    ----------
    weights : torch.Tensor
        ``W``, ``float32 [hidden, m + 1]`` of -1/+1; the last column is the
        weight on the constant bit (the LTU biases).
    thresholds : torch.Tensor
        ``theta``, ``float64 [hidden]``.
    output_weights : torch.Tensor
        ``v``, ``float32 [hidden]`` of -1/+1.
    output_bias : float
        ``c``: 0 under the Nature rule, -1 or +1 under the authors' code's.
    """

    #: Not a fallback: the problem is synthetic by design.
    warning = None

    def __init__(
        self,
        seed: int,
        n_inputs: int = 20,
        n_slow: int = 15,
        hidden: int = 100,
        beta: float = 0.7,
        change_every: int = 10_000,
        change: str = "flip_one",
        bias_input: bool = True,
        threshold_rule: str = "nature",
    ) -> None:
        self.seed = check_index(seed, "seed")
        self.n_inputs = check_index(n_inputs, "n_inputs")
        self.n_slow = check_index(n_slow, "n_slow")
        self.hidden = check_index(hidden, "hidden")
        self.change_every = check_index(change_every, "change_every")
        if self.n_inputs < 1:
            raise ValueError("n_inputs must be >= 1")
        if not 1 <= self.n_slow <= self.n_inputs:
            raise ValueError(
                f"n_slow must lie in 1..n_inputs = {self.n_inputs}, got {n_slow}"
            )
        if self.hidden < 1:
            raise ValueError("hidden must be >= 1")
        if self.change_every < 1:
            raise ValueError(f"change_every must be >= 1, got {change_every}")
        self.beta = _check_beta(beta)
        if change not in CHANGE_MODES:
            raise ValueError(f"change must be one of {CHANGE_MODES}, got {change!r}")
        if threshold_rule not in THRESHOLD_RULES:
            raise ValueError(
                f"threshold_rule must be one of {THRESHOLD_RULES}, "
                f"got {threshold_rule!r}"
            )
        if not isinstance(bias_input, (bool, np.bool_)):
            raise ValueError(f"bias_input must be True or False, got {bias_input!r}")
        self.change, self.threshold_rule = change, threshold_rule
        self.bias_input = bool(bias_input)

        rng = self._rng(_NET, 0)
        shape = (self.hidden, self.n_inputs + 1)
        w = rng.integers(0, 2, size=shape) * 2 - 1
        v = rng.integers(0, 2, size=self.hidden) * 2 - 1
        c = int(rng.integers(0, 2)) * 2 - 1
        self.weights = torch.from_numpy(w.astype(np.float32))
        self.output_weights = torch.from_numpy(v.astype(np.float32))
        self.output_bias = float(c) if threshold_rule == "authors_code" else 0.0
        self.thresholds = ltu_thresholds(self.weights, self.beta, threshold_rule)

        start = self._rng(_START, 0).integers(0, 2, self.n_slow, dtype=np.uint8)
        self._start = start
        self._bases = [start]  # flip_one: slow bits just before each chunk
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._blocks: OrderedDict[int, np.ndarray] = OrderedDict()

    # ------------------------------------------------------------------ naming
    @property
    def identity(self) -> str:
        """The problem and its parameters (not the seed: that is the run's own).

        E.g. ``"slowly-changing-regression-20in-15slow-100h-b0.7-T10000-
        flip_one-gen1"``; ``-nobias`` and ``-authors_code`` are added for those
        options, and ``gen1`` names the random-number scheme.
        """
        parts = [
            "slowly-changing-regression",
            f"{self.n_inputs}in",
            f"{self.n_slow}slow",
            f"{self.hidden}h",
            f"b{self.beta!r}",
            f"T{self.change_every}",
            self.change,
        ]
        if not self.bias_input:
            parts.append("nobias")
        if self.threshold_rule != "nature":
            parts.append(self.threshold_rule)
        return "-".join(parts + [_SCHEME])

    @property
    def name(self) -> str:
        """A caption: what the data are, and that they are synthetic."""
        how = "one flipped" if self.change == "flip_one" else "all redrawn"
        return (
            "Slowly-changing regression (synthetic: a fixed random network of "
            f"{self.hidden} LTUs on {self.n_inputs} binary inputs and a constant "
            f"bit, beta {self.beta:g}; {self.n_slow} slow bits, {how} every "
            f"{self.change_every:,} examples)"
        )

    def __repr__(self) -> str:
        return f"SlowlyChangingRegression(seed={self.seed}, {self.identity!r})"

    @property
    def n_features(self) -> int:
        """Width of ``x``: ``n_inputs``, plus 1 with the constant bit."""
        return self.n_inputs + int(self.bias_input)

    # ------------------------------------------------------------------ target
    def target(self, x) -> torch.Tensor:
        """The target network's output for inputs ``x``, exactly.

        ``x`` is ``[N, n_inputs]`` (the constant bit is then supplied) or
        ``[N, n_inputs + 1]`` (its last column must be all ones), entries in
        ``{0, 1}``.  Returns ``float32 [N]`` on ``x``'s device.
        """
        x = torch.as_tensor(x)
        m = self.n_inputs
        if x.ndim != 2 or x.shape[1] not in (m, m + 1):
            raise ValueError(
                f"x must be [N, {m}] or [N, {m + 1}], got {tuple(x.shape)}"
            )
        if x.shape[1] == m + 1 and not bool((x[:, m] == 1).all()):
            raise ValueError("the last column of x (the constant bit) must be 1")
        if x.shape[1] == m:
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        return ltu_target(
            x, self.weights, self.thresholds, self.output_weights, self.output_bias
        )

    # --------------------------------------------------------------- slow bits
    def change_index(self, t: int) -> int:
        """The period (``t // change_every``) that example ``t`` belongs to."""
        return check_index(t, "t") // self.change_every

    def slow_bits(self, change_index: int) -> torch.Tensor:
        """The slow bits in force during period ``change_index``: float32 [f]."""
        k = check_index(change_index, "change_index")
        return torch.from_numpy(self._slow_states(k, k + 1)[0].astype(np.float32))

    def flipped_bit(self, change_index: int) -> int:
        """``flip_one``: which slow bit was flipped when period ``change_index``
        (>= 1) began."""
        k = check_index(change_index, "change_index")
        if self.change != "flip_one":
            raise ValueError("flipped_bit is defined only for change='flip_one'")
        if k < 1:
            raise ValueError("period 0 starts from random bits: no bit is flipped")
        return int(self._draws(k // SLOW_CHUNK)[k % SLOW_CHUNK])

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def _draws(self, c: int) -> np.ndarray:
        rng = self._rng(_SLOW, c)
        if self.change == "flip_one":
            return rng.integers(0, self.n_slow, SLOW_CHUNK)
        return rng.integers(0, 2, (SLOW_CHUNK, self.n_slow), dtype=np.uint8)

    def _chunk(self, c: int) -> np.ndarray:
        """Slow bits of periods ``SLOW_CHUNK c ...``: uint8 [SLOW_CHUNK, f]."""
        if c in self._chunks:
            self._chunks.move_to_end(c)
            return self._chunks[c]
        draws = self._draws(c)
        if self.change == "redraw_all":
            states = draws
        else:
            while len(self._bases) <= c:  # bits before chunk c: end of chunk c-1
                self._bases.append(self._chunk(len(self._bases) - 1)[-1])
            flips = np.zeros((SLOW_CHUNK, self.n_slow), dtype=np.uint8)
            flips[np.arange(SLOW_CHUNK), draws] = 1
            if c == 0:
                flips[0] = 0
            states = self._bases[c] ^ (np.cumsum(flips, axis=0) & 1).astype(np.uint8)
        if c == 0:
            states[0] = self._start
        self._chunks[c] = states
        if len(self._chunks) > _CACHED:
            self._chunks.popitem(last=False)
        return states

    def _slow_states(self, lo: int, hi: int) -> np.ndarray:
        """Slow bits of periods ``lo ... hi - 1``: uint8 [hi - lo, f]."""
        first, last = lo // SLOW_CHUNK, (hi - 1) // SLOW_CHUNK
        states = np.concatenate([self._chunk(c) for c in range(first, last + 1)])
        return states[lo - first * SLOW_CHUNK : hi - first * SLOW_CHUNK]

    # --------------------------------------------------------------- examples
    def _fast_block(self, b: int) -> np.ndarray:
        if b not in self._blocks:
            n_fast = self.n_inputs - self.n_slow
            shape = (FAST_BLOCK, n_fast)
            self._blocks[b] = self._rng(_FAST, b).integers(0, 2, shape, dtype=np.uint8)
            if len(self._blocks) > _CACHED:
                self._blocks.popitem(last=False)
        self._blocks.move_to_end(b)
        return self._blocks[b]

    def examples(self, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples ``start ... start + n - 1`` of the stream.

        Returns
        -------
        x : torch.Tensor
            ``float32 [n, n_features]`` in ``{0, 1}``: slow bits, fast bits,
            then (with ``bias_input``) the constant 1.
        y : torch.Tensor
            ``float32 [n]``, the target network's output (integers).
        """
        start, n = check_index(start, "start"), check_index(n, "n")
        m, f, stop = self.n_inputs, self.n_slow, start + n
        x = np.empty((n, self.n_features), dtype=np.float32)
        if not n:
            return torch.from_numpy(x), torch.zeros(0)
        periods = np.arange(start, stop, dtype=np.int64) // self.change_every
        lo, hi = int(periods[0]), int(periods[-1]) + 1
        slow = self._slow_states(lo, hi)
        x[:, :f] = slow[periods - lo]
        at = start
        while at < stop:
            b, offset = divmod(at, FAST_BLOCK)
            take = min(FAST_BLOCK - offset, stop - at)
            block = self._fast_block(b)
            x[at - start : at - start + take, f:m] = block[offset : offset + take]
            at += take
        if self.bias_input:
            x[:, m] = 1.0
        x = torch.from_numpy(x)
        k = m - f
        if k <= _TABLE_BITS and (hi - lo) << k < n:
            # Within a period y depends on the fast bits alone: tabulate the
            # target on the 2^k fast patterns of each period and look it up.
            table = self._table(slow).view(hi - lo, 1 << k)
            codes = x[:, f:m].to(torch.int64) @ (1 << torch.arange(k))
            rows = torch.from_numpy(periods - lo)
            return x, table[rows, codes]
        full = x if self.bias_input else torch.cat([x, torch.ones(n, 1)], dim=1)
        y = _ltu_target(
            full, self.weights, self.thresholds, self.output_weights, self.output_bias
        )
        return x, y

    def _table(self, slow: np.ndarray) -> torch.Tensor:
        """Targets of every fast pattern (in binary order, bit j = fast bit j)
        for each row of slow bits: float32 [len(slow) * 2^k]."""
        m, f = self.n_inputs, self.n_slow
        k = m - f
        codes = np.arange(1 << k)
        patterns = ((codes[:, None] >> np.arange(k)) & 1).astype(np.float32)
        inputs = np.ones((len(slow), 1 << k, m + 1), dtype=np.float32)
        inputs[:, :, :f] = slow[:, None, :]
        inputs[:, :, f:m] = patterns[None]
        return _ltu_target(
            torch.from_numpy(inputs.reshape(-1, m + 1)),
            self.weights,
            self.thresholds,
            self.output_weights,
            self.output_bias,
        )

    def batches(self, start: int, stop: int, size: int = FAST_BLOCK):
        """Yield ``(x, y)`` for examples ``start ... stop - 1``, ``size`` at a
        time (the last batch may be shorter)."""
        start, stop = check_index(start, "start"), check_index(stop, "stop")
        if check_index(size, "size") < 1:
            raise ValueError("size must be >= 1")
        for at in range(start, stop, size):
            yield self.examples(at, min(size, stop - at))
