"""Continual-learning data for the loss-of-plasticity experiments.

Three problems from Dohare et al. (Nature, 2024):

* **Online Permuted MNIST.** Task ``t`` shows the MNIST digits with the pixels
  shuffled by a task-specific permutation (:class:`PermutedMNISTStream` over
  :func:`load_mnist` / :func:`mnist_or_digits`).
* **Continual ImageNet.** Task ``t`` is a binary classification between two
  ImageNet classes at 32x32, 600 train and 100 test images per class
  (:class:`BinaryTaskStream` over a :class:`ClassImages` source, see
  :func:`class_images`).
* **Slowly-changing regression.** A synthetic stream (by design): binary
  inputs whose slow bits change every ``T`` examples, labelled by a fixed
  random network of linear threshold units
  (:class:`SlowlyChangingRegression`).

Missing data give an error that says how to get them.  The ``*_or_*`` helpers
and ``class_images("auto")`` may instead fall back to a smaller *real* data
set (8x8 digits, CIFAR-100, MNIST digits as classes), with a
:class:`DataWarning` and the message in the object's ``warning``.  Nothing
here substitutes random noise for data (the slowly-changing regression is
synthetic by design).  Every data set has an ``identity`` string for run
keys: a content hash, or for the synthetic stream its parameters.

Modules:

* :mod:`~lopbook.data.errors`: :class:`DataWarning` and the errors.
* :mod:`~lopbook.data.locations`: data directories, environment variables
  (``LOPBOOK_DATA``, ``LOPBOOK_IMAGENET``, ``LOPBOOK_TINYIMAGENET``), the
  network probe.
* :mod:`~lopbook.data.mnist`: IDX files, :class:`Dataset`, the MNIST loaders.
* :mod:`~lopbook.data.images`: :class:`ClassImages` sources: class folders
  (ImageNet 32x32, Tiny ImageNet), CIFAR-100, digits; :func:`class_images`.
* :mod:`~lopbook.data.streams`: :class:`PermutedMNISTStream`,
  :class:`BinaryTaskStream`.
* :mod:`~lopbook.data.slowly_changing`: :class:`SlowlyChangingRegression`,
  :func:`ltu_thresholds`, :func:`ltu_target`.
* :mod:`~lopbook.data.prepare`: :func:`prepare_imagenet32`,
  :func:`prepare_tinyimagenet` (release -> class folder).
* :mod:`~lopbook.data.identity`: the content hashes behind ``identity``.
* ``python -m lopbook.data prepare-imagenet32 SRC OUT`` and
  ``python -m lopbook.data prepare-tinyimagenet SRC OUT``: the command line
  (:mod:`lopbook.data.__main__`, also :func:`main`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import DatasetUnavailable, DataWarning, MNISTUnavailable
from .images import (
    CLASS_KINDS,
    CLASSES_FILE,
    METADATA_FILE,
    CIFAR100Classes,
    ClassFolder,
    ClassImages,
    DigitClasses,
    ImageNet32,
    class_images,
    short_class_name,
)
from .locations import (
    CONNECT_TIMEOUT_S,
    DATA_ENV,
    DOWNLOAD_TIMEOUT_S,
    IMAGENET_ENV,
    TINYIMAGENET_ENV,
    data_root,
    default_cache_dir,
)
from .mnist import Dataset, load_digits_fallback, load_mnist, mnist_or_digits, read_idx
from .prepare import box_downsample, prepare_imagenet32, prepare_tinyimagenet
from .slowly_changing import (
    SlowlyChangingRegression,
    ltu_target,
    ltu_thresholds,
)
from .streams import BinaryTaskStream, PermutedMNISTStream

__all__ = [
    "DataWarning",
    "MNISTUnavailable",
    "DatasetUnavailable",
    "Dataset",
    "read_idx",
    "data_root",
    "default_cache_dir",
    "load_mnist",
    "load_digits_fallback",
    "mnist_or_digits",
    "PermutedMNISTStream",
    "ClassImages",
    "ClassFolder",
    "ImageNet32",
    "prepare_imagenet32",
    "prepare_tinyimagenet",
    "box_downsample",
    "CIFAR100Classes",
    "DigitClasses",
    "class_images",
    "short_class_name",
    "BinaryTaskStream",
    "SlowlyChangingRegression",
    "ltu_thresholds",
    "ltu_target",
    "main",
    "CLASS_KINDS",
    "METADATA_FILE",
    "CLASSES_FILE",
    "DATA_ENV",
    "IMAGENET_ENV",
    "TINYIMAGENET_ENV",
    "CONNECT_TIMEOUT_S",
    "DOWNLOAD_TIMEOUT_S",
]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line, ``python -m lopbook.data ...``; returns the exit status."""
    from .__main__ import main as command_line  # imported late: see runpy

    return command_line(argv)
