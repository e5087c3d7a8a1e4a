"""The two continual-learning streams: Permuted MNIST and class-pair (binary) tasks."""

from __future__ import annotations

import numpy as np
import torch

from .errors import check_index
from .images import ClassImages
from .mnist import Dataset

__all__ = ["PermutedMNISTStream", "BinaryTaskStream"]


class PermutedMNISTStream:
    """Online Permuted MNIST: task t = a fresh pixel permutation and example order.

    Everything is a deterministic function of ``(seed, task)`` alone: the
    generator ``np.random.default_rng(np.random.SeedSequence([seed, task]))``
    first draws the pixel permutation, then the example order.  No state is
    carried between calls, so tasks can be generated in any order.

    Parameters
    ----------
    dataset : Dataset
        Source images (e.g. from :func:`mnist_or_digits`).
    seed : int
        Non-negative seed of the stream.
    examples_per_task : int
        Length of each task's stream.  If it exceeds ``len(dataset)``, the
        order is several passes over the data, each freshly shuffled,
        concatenated and truncated.
    """

    def __init__(self, dataset: Dataset, seed: int, examples_per_task: int) -> None:
        if len(dataset) == 0:
            raise ValueError("PermutedMNISTStream needs a non-empty dataset")
        if check_index(examples_per_task, "examples_per_task") < 1:
            raise ValueError(f"examples_per_task must be >= 1, got {examples_per_task}")
        self.dataset = dataset
        self.seed = check_index(seed, "seed")
        self.examples_per_task = int(examples_per_task)

    @property
    def n_features(self) -> int:
        """Input size ``D`` of every task."""
        return self.dataset.n_features

    def _draw(self, task: int) -> tuple[np.ndarray, np.ndarray]:
        seeds = np.random.SeedSequence([self.seed, check_index(task, "task")])
        rng = np.random.default_rng(seeds)
        permutation = rng.permutation(self.dataset.n_features)
        n = len(self.dataset)
        passes = -(-self.examples_per_task // n)
        order = np.concatenate([rng.permutation(n) for _ in range(passes)])
        order = order[: self.examples_per_task]
        return permutation.astype(np.int64), order.astype(np.int64)

    def permutation(self, task: int) -> torch.Tensor:
        """Pixel permutation of ``task``: int64 ``[D]``, a permutation of range(D)."""
        return torch.from_numpy(self._draw(task)[0])

    def order(self, task: int) -> torch.Tensor:
        """Dataset indices shown during ``task``: int64 ``[examples_per_task]``."""
        return torch.from_numpy(self._draw(task)[1])

    def task(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples of ``task`` in presentation order.

        Returns
        -------
        x : torch.Tensor
            ``float32 [examples_per_task, D]``, ``dataset.x[order][:, permutation]``.
        y : torch.Tensor
            ``int64 [examples_per_task]`` labels.
        """
        permutation, order = (torch.from_numpy(a) for a in self._draw(task))
        x = self.dataset.x.index_select(0, order).index_select(1, permutation)
        return x, self.dataset.y.index_select(0, order)

    def probe(self, task: int, size: int) -> torch.Tensor:
        """The first ``size`` inputs of ``task``, permuted (capped at its length)."""
        size = min(check_index(size, "size"), self.examples_per_task)
        permutation, order = (torch.from_numpy(a) for a in self._draw(task))
        return self.dataset.x.index_select(0, order[:size]).index_select(1, permutation)


class BinaryTaskStream:
    """Continual ImageNet: every task tells two classes apart.

    ``pairing="order"`` (the paper's protocol, as in the authors' code): task t tells
    class ``order[2t]`` from ``order[2t+1]`` of one random class order, which repeats
    when tasks outnumber the pairs of classes. ``pairing="random"``: every task is a
    fresh random pair of classes (in random roles), so that a source with few classes
    still gives many different tasks (60 classes: 1,770 pairs instead of 30).

    Parameters
    ----------
    source : ClassImages
        Where the images of each class come from.
    seed : int
        Non-negative seed; fixes the class order (or the random pairs).
    pairing : {"order", "random"}
    """

    def __init__(self, source: ClassImages, seed: int, pairing: str = "order") -> None:
        if pairing not in ("order", "random"):
            raise ValueError(f"pairing must be 'order' or 'random', got {pairing!r}")
        self.pairing = pairing
        if source.n_classes < 2:
            raise ValueError(
                f"{source.name}: binary tasks need at least 2 classes, "
                f"got {source.n_classes}"
            )
        self.source = source
        self.seed = check_index(seed, "seed")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2**20]))
        self._order = rng.permutation(source.n_classes).astype(np.int64)

    @property
    def n_pairs(self) -> int:
        """Number of distinct tasks before the class order repeats."""
        return self.source.n_classes // 2

    def class_order(self) -> np.ndarray:
        """The class order, a permutation of ``range(n_classes)`` (a copy)."""
        return self._order.copy()

    def classes(self, task: int) -> tuple[int, int]:
        """Classes ``(a, b)`` of ``task``; label 0 is ``a``, label 1 is ``b``.

        With an odd number of classes the last class of the order is never used.
        """
        if self.pairing == "random":
            key = [self.seed, 2**21, check_index(task, "task")]
            a, b = np.random.default_rng(np.random.SeedSequence(key)).choice(
                self.source.n_classes, size=2, replace=False
            )
            return int(a), int(b)
        start = 2 * check_index(task, "task") % (2 * self.n_pairs)
        return int(self._order[start]), int(self._order[start + 1])

    def task(
        self, task: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Data of ``task``: ``x_train, y_train, x_test, y_test``.

        ``x`` is float32 ``[2 * per_class, 3, 32, 32]`` in ``[0, 1]``, class
        ``a`` first; ``y`` is int64 in ``{0, 1}``.  Training examples are not
        shuffled.
        """
        n_train, n_test = self.source.train_per_class, self.source.test_per_class
        pair = [self.source.images(c) for c in self.classes(task)]
        for c, images in zip(self.classes(task), pair, strict=True):
            shape = (n_train + n_test, 3, 32, 32)
            if images.shape != shape or images.dtype != np.uint8:
                raise ValueError(
                    f"{self.source.name}: class {c} gave {images.dtype} {images.shape}"
                )

        def stack(part: slice, n: int) -> tuple[torch.Tensor, torch.Tensor]:
            x = np.concatenate([images[part] for images in pair])
            x = torch.from_numpy(x).to(torch.float32).div_(255.0)
            zeros, ones = (
                torch.zeros(n, dtype=torch.int64),
                torch.ones(n, dtype=torch.int64),
            )
            return x, torch.cat([zeros, ones])

        x_train, y_train = stack(slice(0, n_train), n_train)
        x_test, y_test = stack(slice(n_train, n_train + n_test), n_test)
        return x_train, y_train, x_test, y_test
