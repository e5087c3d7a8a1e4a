"""Continual-learning data streams for the loss-of-plasticity experiments.

Two problems from Dohare et al. (Nature, 2024) are provided.

* **Online Permuted MNIST.** Task ``t`` shows the MNIST digits with the
  pixels shuffled by a task-specific random permutation
  (:class:`PermutedMNISTStream`, built on :func:`load_mnist` /
  :func:`mnist_or_digits`).
* **Continual ImageNet.** Task ``t`` is a binary classification between two
  ImageNet classes, 600 training and 100 test images per class, at 32x32
  resolution (:class:`BinaryTaskStream` over a :class:`ClassImages` source,
  see :func:`class_images`).

When the real data are missing the loaders fail with an error that says how to
get them.  The ``*_or_*`` helpers and ``class_images("auto")`` may instead fall
back to a smaller *real* data set (scikit-learn's 8x8 digits, CIFAR-100,
MNIST digits as classes); they then emit a :class:`DataWarning` and record the
message in the returned object's ``warning`` attribute so that figures can be
labelled honestly.  Nothing here ever substitutes random noise for data.

Run ``python -m lopbook.data prepare-imagenet32 SRC OUT`` to convert the
official Downsampled ImageNet 32x32 release into the per-class files used by
:class:`ImageNet32`.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import functools
import gzip
import os
import pickle
import re
import socket
import threading
import urllib.parse
import urllib.request
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
    "ImageNet32",
    "prepare_imagenet32",
    "CIFAR100Classes",
    "DigitClasses",
    "class_images",
    "BinaryTaskStream",
    "main",
]

DATA_ENV = "LOPBOOK_DATA"
IMAGENET_ENV = "LOPBOOK_IMAGENET"

#: Seconds allowed for the "is the download server reachable?" probe.
CONNECT_TIMEOUT_S = 3.0
#: Socket timeout while a download is running (per blocking read, not total).
DOWNLOAD_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------
# Errors and warnings
# --------------------------------------------------------------------------


class DataWarning(UserWarning):
    """Warning category for every fallback to a substitute data set."""


class DatasetUnavailable(RuntimeError):
    """A data set is neither on disk nor downloadable right now."""


class MNISTUnavailable(DatasetUnavailable):
    """The requested MNIST split is neither on disk nor downloadable.

    Attributes
    ----------
    reason : str
        One-line summary of why, for use in fallback warnings.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------
# Locations and downloads
# --------------------------------------------------------------------------


def data_root(root: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the data directory chosen by the user, if any.

    Parameters
    ----------
    root : path-like, optional
        Explicit directory; wins over the environment.

    Returns
    -------
    pathlib.Path or None
        ``root`` if given, else ``$LOPBOOK_DATA`` if set and non-empty,
        else ``None`` (meaning: use the default cache directory).
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else None


def default_cache_dir() -> Path:
    """Directory for downloaded data: ``$XDG_CACHE_HOME/lopbook`` or ``~/.cache/lopbook``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lopbook"


def _reachable(urls: Iterable[str], timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to any of ``urls`` (or the proxy for them) opens quickly.

    The probe runs in a daemon thread with a hard deadline so that a hanging
    DNS lookup cannot stall the caller for longer than ``timeout`` seconds.
    """
    proxies = urllib.request.getproxies()
    targets: list[tuple[str, int]] = []
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        proxy = proxies.get(parsed.scheme)
        if proxy:
            parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.hostname:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            if (parsed.hostname, port) not in targets:
                targets.append((parsed.hostname, port))

    found = threading.Event()

    def probe() -> None:
        for host, port in targets:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    found.set()
                    return
            except OSError:
                continue

    thread = threading.Thread(target=probe, name="lopbook-net-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return found.is_set()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Set the default socket timeout (used by urllib downloads) and restore it afterwards."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# --------------------------------------------------------------------------
# IDX files (the MNIST file format)
# --------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, the format MNIST is distributed in.

    Parameters
    ----------
    path : path-like
        File to read; gunzipped on the fly if its name ends with ``.gz``.

    Returns
    -------
    numpy.ndarray
        Array with the shape and element type given in the header, in native
        byte order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a well-formed IDX file (bad magic number, unknown
        type code, or a payload that does not match the header).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                    raw = unzipped.read()
            else:
                raw = handle.read()
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"{path}: not an IDX file (cannot decompress it: {err}); delete it and download it again"
            ) from None

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(
            f"{path}: not an IDX file (expected magic bytes 00 00 <type in "
            f"{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}> <ndim >= 1>, "
            f"got {raw[:4].hex(' ') or 'an empty file'})"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"{path}: not an IDX file (header announces {ndim} dimensions but is truncated)")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    expected, actual = count * dtype.itemsize, len(raw) - offset
    if actual != expected:
        raise ValueError(
            f"{path}: not an IDX file or a damaged one (header says shape {shape} of "
            f"{dtype.name}, i.e. {expected} payload bytes, but the file holds {actual}); "
            "a truncated download? Delete it and download it again"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


# --------------------------------------------------------------------------
# Flattened-image data sets (MNIST and the 8x8 digits fallback)
# --------------------------------------------------------------------------


@dataclass
class Dataset:
    """Flattened images for the Permuted MNIST stream.

    Attributes
    ----------
    x : torch.Tensor
        ``float32 [N, D]`` pixel values scaled to ``[0, 1]``, not normalised.
    y : torch.Tensor
        ``int64 [N]`` digit labels in ``0..9``.
    name : str
        Human-readable description, e.g. ``"MNIST test split (10,000 images)"``.
    image_shape : tuple of int
        ``(height, width)`` of one image; ``height * width == D``.
    warning : str or None
        The fallback message if this is a substitute for MNIST, else ``None``.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    image_shape: tuple[int, int]
    warning: str | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.dtype != torch.float32:
            raise ValueError(f"Dataset.x must be a float32 [N, D] tensor, got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.ndim != 1 or self.y.dtype != torch.int64 or len(self.y) != len(self.x):
            raise ValueError(
                f"Dataset.y must be an int64 [N] tensor with N = {len(self.x)}, "
                f"got {self.y.dtype} {tuple(self.y.shape)}"
            )
        self.image_shape = (int(self.image_shape[0]), int(self.image_shape[1]))
        if self.image_shape[0] * self.image_shape[1] != self.x.shape[1]:
            raise ValueError(f"image_shape {self.image_shape} does not match D = {self.x.shape[1]} features")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.n_classes):
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1}")

    @property
    def n_features(self) -> int:
        """Number of pixels per flattened image, ``D``."""
        return int(self.x.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes: always the ten digits."""
        return 10

    def __len__(self) -> int:
        return int(self.x.shape[0])


_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_SPLITS = ("train", "test", "auto", "all")
_MNIST_LAYOUT = (
    "MNIST is four IDX files, each optionally gzipped (.gz): "
    + ", ".join(name for pair in _MNIST_FILES.values() for name in pair)
    + ". Put them in ROOT/MNIST/raw/ (torchvision's layout; ROOT/ or ROOT/raw/ work too) "
    f"and pass root=ROOT or set {DATA_ENV}=ROOT. torchvision can fetch them: "
    "`torchvision.datasets.MNIST(ROOT, download=True)` on a machine with internet access."
)


def _mnist_dirs(base: Path) -> list[Path]:
    return [base / "MNIST" / "raw", base, base / "raw"]


def _find_file(dirs: Sequence[Path], name: str) -> Path | None:
    for directory in dirs:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _mnist_on_disk(dirs: Sequence[Path]) -> dict[str, tuple[Path, Path]]:
    found = {}
    for split, (images, labels) in _MNIST_FILES.items():
        image_file, label_file = _find_file(dirs, images), _find_file(dirs, labels)
        if image_file is not None and label_file is not None:
            found[split] = (image_file, label_file)
    return found


def _wanted_splits(split: str, on_disk: dict[str, tuple[Path, Path]]) -> list[str]:
    if split in ("train", "test"):
        return [split]
    if split == "auto":
        return ["train"] if "train" in on_disk or "test" not in on_disk else ["test"]
    return [s for s in ("train", "test") if s in on_disk] or ["train", "test"]


def _read_mnist_split(image_file: Path, label_file: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{image_file}: expected MNIST images, uint8 N x 28 x 28, got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{label_file}: expected MNIST labels, uint8 of shape (N,), got {labels.dtype} {labels.shape}")
    if len(labels) and labels.max() > 9:
        raise ValueError(f"{label_file}: MNIST labels must be digits 0..9, found {int(labels.max())}")
    if len(labels) != len(images):
        raise ValueError(f"{label_file}: holds {len(labels)} labels but {image_file} holds {len(images)} images")
    return images, labels


def _download_mnist(base: Path) -> None:
    """Fetch MNIST into ``base/MNIST/raw`` with torchvision; raise MNISTUnavailable on failure."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as err:
        raise MNISTUnavailable(
            f"cannot download MNIST: torchvision is not installed ({err}). {_MNIST_LAYOUT}",
            reason="torchvision is not installed, so it cannot be downloaded",
        ) from err
    if not _reachable(MNIST.mirrors):
        raise MNISTUnavailable(
            f"cannot download MNIST into {base}: no download server answered within "
            f"{CONNECT_TIMEOUT_S:g} s (offline?). {_MNIST_LAYOUT}",
            reason="not on disk and the download servers are unreachable",
        )
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            MNIST(str(base), train=True, download=True)
    except Exception as err:  # torchvision raises RuntimeError / URLError / OSError
        raise MNISTUnavailable(
            f"downloading MNIST into {base} failed: {err}. {_MNIST_LAYOUT}",
            reason=f"the download failed ({type(err).__name__})",
        ) from err


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    split: str = "auto",
    download: bool = True,
) -> Dataset:
    """Load MNIST from IDX files, downloading them if allowed and needed.

    Parameters
    ----------
    root : path-like, optional
        Data directory (see :func:`data_root`); defaults to ``$LOPBOOK_DATA``,
        then to :func:`default_cache_dir`.  Files are looked up in
        ``root/MNIST/raw/``, ``root/`` and ``root/raw/``, gzipped or not.
    split : {"auto", "train", "test", "all"}
        ``"auto"`` takes the training split when it is on disk, else the test
        split; it downloads only if neither is on disk.  ``"all"`` joins the
        splits that are on disk (train first), downloading if none is.
    download : bool
        Allow a download with torchvision when the split is missing.

    Returns
    -------
    Dataset
        Images flattened to 784 features, scaled to ``[0, 1]``.

    Raises
    ------
    FileNotFoundError
        If an explicitly chosen ``root`` does not exist.
    MNISTUnavailable
        If the split is missing and cannot be downloaded.
    ValueError
        If a file is malformed or the arguments are invalid.
    """
    if split not in _MNIST_SPLITS:
        raise ValueError(f"split must be one of {_MNIST_SPLITS}, got {split!r}")
    explicit = data_root(root)
    if explicit is not None and not explicit.is_dir():
        origin = "root argument" if root is not None else f"{DATA_ENV} environment variable"
        raise FileNotFoundError(
            f"MNIST data directory {explicit} (from the {origin}) does not exist or is not a directory. {_MNIST_LAYOUT}"
        )
    base = explicit if explicit is not None else default_cache_dir()
    dirs = _mnist_dirs(base)

    on_disk = _mnist_on_disk(dirs)
    wanted = _wanted_splits(split, on_disk)
    missing = [s for s in wanted if s not in on_disk]
    if missing:
        if not download:
            raise MNISTUnavailable(
                f"MNIST {'/'.join(missing)} split not found in {', '.join(map(str, dirs))} "
                f"and download=False. {_MNIST_LAYOUT}",
                reason=f"{'/'.join(missing)} split not found under {base} and download=False",
            )
        _download_mnist(base)
        on_disk = _mnist_on_disk(dirs)
        wanted = _wanted_splits(split, on_disk)
        missing = [s for s in wanted if s not in on_disk]
        if missing:
            raise MNISTUnavailable(
                f"the MNIST download into {base} did not produce the {'/'.join(missing)} files. {_MNIST_LAYOUT}",
                reason="the download did not produce the expected files",
            )

    parts = [_read_mnist_split(*on_disk[s]) for s in wanted]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    which = "+".join(wanted)
    plural = "s" if len(wanted) > 1 else ""
    return Dataset(x=x, y=y, name=f"MNIST {which} split{plural} ({len(y):,} images)", image_shape=(28, 28))


def load_digits_fallback() -> Dataset:
    """Load scikit-learn's 8x8 handwritten digits as a loudly labelled MNIST substitute.

    Returns
    -------
    Dataset
        1,797 real 8x8 images (64 features) scaled from ``0..16`` to ``[0, 1]``,
        with ``warning`` set.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(np.asarray(digits.data, dtype=np.float32) / np.float32(16.0))
    y = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    return Dataset(
        x=x,
        y=y,
        name=f"scikit-learn 8x8 digits ({len(y):,} images) - FALLBACK, not MNIST",
        image_shape=(8, 8),
        warning=("This is scikit-learn's 8x8 digits data set used in place of MNIST: results are NOT MNIST results."),
    )


def mnist_or_digits(
    root: str | os.PathLike[str] | None = None,
    split: str = "auto",
    download: bool = True,
) -> Dataset:
    """Load MNIST, or fall back to the 8x8 digits with a :class:`DataWarning`.

    Parameters are those of :func:`load_mnist`.  Only an unavailable MNIST
    triggers the fallback; a nonexistent explicit ``root`` or a corrupt file
    still raises, since those are mistakes to fix rather than to work around.
    """
    try:
        return load_mnist(root=root, split=split, download=download)
    except MNISTUnavailable as err:
        message = (
            f"MNIST is not available ({err.reason}): falling back to scikit-learn's 8x8 digits "
            "(1,797 images); results are NOT MNIST results. "
            f"Set {DATA_ENV}=/path/to/dir containing MNIST/raw/*-ubyte[.gz] "
            "or allow download (download=True on a machine with internet access)."
        )
        warnings.warn(message, DataWarning, stacklevel=2)
        dataset = load_digits_fallback()
        dataset.warning = message
        return dataset


def _check_index(value: int, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


class PermutedMNISTStream:
    """Online Permuted MNIST: task t = a fresh random pixel permutation, and an order of examples.

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
        if _check_index(examples_per_task, "examples_per_task") < 1:
            raise ValueError(f"examples_per_task must be >= 1, got {examples_per_task}")
        self.dataset = dataset
        self.seed = _check_index(seed, "seed")
        self.examples_per_task = int(examples_per_task)

    @property
    def n_features(self) -> int:
        """Input size ``D`` of every task."""
        return self.dataset.n_features

    def _draw(self, task: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _check_index(task, "task")]))
        permutation = rng.permutation(self.dataset.n_features)
        n, passes = len(self.dataset), -(-self.examples_per_task // len(self.dataset))
        order = np.concatenate([rng.permutation(n) for _ in range(passes)])[: self.examples_per_task]
        return permutation.astype(np.int64), order.astype(np.int64)

    def permutation(self, task: int) -> torch.Tensor:
        """Pixel permutation of ``task``: int64 ``[D]``, a permutation of ``range(D)``."""
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
        """The first ``size`` inputs of ``task`` (permuted), ``size`` capped at ``examples_per_task``."""
        size = min(_check_index(size, "size"), self.examples_per_task)
        permutation, order = (torch.from_numpy(a) for a in self._draw(task))
        return self.dataset.x.index_select(0, order[:size]).index_select(1, permutation)


# --------------------------------------------------------------------------
# Continual ImageNet: class-wise image sources
# --------------------------------------------------------------------------


class ClassImages(abc.ABC):
    """Images grouped by class, for the binary-task (class-pair) protocol.

    Attributes
    ----------
    name : str
        Human-readable description of the source.
    warning : str or None
        Message if the source is a stand-in for ImageNet, else ``None``.
    n_classes : int
        Number of classes, indexed ``0..n_classes-1``.
    train_per_class, test_per_class : int
        Split sizes; :meth:`images` returns the training images first.
    """

    name: str
    warning: str | None = None
    n_classes: int
    train_per_class: int
    test_per_class: int

    @property
    def images_per_class(self) -> int:
        """``train_per_class + test_per_class``."""
        return self.train_per_class + self.test_per_class

    def _check_class(self, c: int) -> int:
        c = _check_index(c, "class index")
        if c >= self.n_classes:
            raise IndexError(f"class {c} out of range: {self.name} has {self.n_classes} classes")
        return c

    @abc.abstractmethod
    def images(self, c: int) -> np.ndarray:
        """All images of class ``c``: uint8 ``[train_per_class + test_per_class, 3, 32, 32]``.

        The first ``train_per_class`` are for training, the rest for testing.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}>"


_IMAGENET_FILE = re.compile(r"(0|[1-9][0-9]*)\.npy")
_IMAGENET_HELP = (
    "Expected a directory holding one file per class named <class index>.npy (0.npy, 1.npy, ... "
    "999.npy), each a uint8 array of shape (700, 32, 32, 3) or (700, 3, 32, 32): the first 600 "
    "images train, the last 100 test. The paper's authors distribute this data; see "
    "lop/imagenet/README.md in https://github.com/shibhansh/loss-of-plasticity. To build it from the "
    "official Downsampled ImageNet 32x32 release (Chrabaszcz et al. 2017, Imagenet32_train from "
    "https://image-net.org/download-images), run: python -m lopbook.data prepare-imagenet32 SRC OUT. "
    f"Then pass OUT as root or set {IMAGENET_ENV}=OUT."
)


def _channel_first(array: np.ndarray, n_images: int, source: object) -> np.ndarray:
    """Validate a uint8 ``(n, 32, 32, 3)`` or ``(n, 3, 32, 32)`` array and return it channel-first."""
    if array.dtype != np.uint8:
        raise ValueError(f"{source}: expected uint8 images, got dtype {array.dtype}. {_IMAGENET_HELP}")
    if array.ndim == 4 and array.shape[0] == n_images and array.shape[1:] == (32, 32, 3):
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    if array.ndim == 4 and array.shape[0] == n_images and array.shape[1:] == (3, 32, 32):
        return np.ascontiguousarray(array)
    raise ValueError(
        f"{source}: expected shape ({n_images}, 32, 32, 3) or ({n_images}, 3, 32, 32), "
        f"got {array.shape}. {_IMAGENET_HELP}"
    )


class ImageNet32(ClassImages):
    """The paper's Continual ImageNet data: ImageNet downsampled to 32x32, one .npy per class with 700 images.

    Class files are read lazily, when :meth:`images` first asks for them, and
    the 64 most recently used classes are kept in memory.

    Parameters
    ----------
    root : path-like
        Directory with ``0.npy`` ... ``<K-1>.npy`` (see :func:`prepare_imagenet32`).
    """

    train_per_class = 600
    test_per_class = 100

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageNet32 directory {self.root} does not exist. {_IMAGENET_HELP}")
        indices = sorted(
            int(m.group(1)) for p in self.root.iterdir() if (m := _IMAGENET_FILE.fullmatch(p.name)) and p.is_file()
        )
        if not indices:
            raise FileNotFoundError(f"no class files (0.npy, 1.npy, ...) in {self.root}. {_IMAGENET_HELP}")
        if indices != list(range(len(indices))):
            missing = sorted(set(range(indices[-1] + 1)) - set(indices))
            shown = ", ".join(f"{i}.npy" for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ValueError(
                f"class files in {self.root} must be numbered 0..K-1 without gaps; missing {shown}. {_IMAGENET_HELP}"
            )
        self.n_classes = len(indices)
        self.name = f"ImageNet 32x32 ({self.n_classes} classes, {self.root})"
        self.warning = None
        self._load = functools.lru_cache(maxsize=64)(self._load_class)

    def path(self, c: int) -> Path:
        """File holding class ``c``."""
        return self.root / f"{self._check_class(c)}.npy"

    def _load_class(self, c: int) -> np.ndarray:
        path = self.path(c)
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path}: not a plain .npy array ({err}). {_IMAGENET_HELP}") from None
        images = _channel_first(array, self.images_per_class, path)
        images.setflags(write=False)  # shared through the cache
        return images

    def images(self, c: int) -> np.ndarray:
        """Images of class ``c``: uint8 ``[700, 3, 32, 32]``, 600 train then 100 test (read-only)."""
        return self._load(self._check_class(c))


def _batch_files(src: Path) -> list[Path]:
    pattern = re.compile(r"train_data_batch_([0-9]+)(\.npz)?")
    found = [(int(m.group(1)), p) for p in src.iterdir() if (m := pattern.fullmatch(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            batch = {"data": archive["data"], "labels": archive["labels"]}
    else:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        if isinstance(batch, dict):  # Python 2 pickles may use byte-string keys
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    try:
        data = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{path}: expected a dict with 'data' and 'labels' ({err})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 [N, 3072] (32x32 RGB planes), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(labels)} labels for {len(data)} images")
    if len(labels) and labels.min() < 1:
        raise ValueError(f"{path}: labels must start at 1 (official release), found {labels.min()}")
    return data, labels


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(tmp, path)


def prepare_imagenet32(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    images_per_class: int = 700,
) -> None:
    """Convert the official Downsampled ImageNet 32x32 release into per-class ``.npy`` files.

    Parameters
    ----------
    src : path-like
        Directory with ``train_data_batch_1`` ... ``train_data_batch_10``
        (Chrabaszcz, Loshchilov & Hutter, 2017): pickled dicts with
        ``'data'`` uint8 ``[N, 3072]`` (R, G, B planes of 1024 pixels) and
        ``'labels'`` (ints ``1..1000``).  The ``.npz`` variant of the release
        is accepted too.  Pickles can run code: only use a trusted copy.
    out : path-like
        Output directory (created); receives ``<label - 1>.npy`` per class,
        uint8 ``(images_per_class, 32, 32, 3)``, each written atomically.
    images_per_class : int
        Keep the first this many images of each class, in batch order.

    Raises
    ------
    FileNotFoundError
        If ``src`` or its batch files are missing.
    ValueError
        If a batch is malformed or a class has fewer than ``images_per_class`` images.
    """
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if _check_index(images_per_class, "images_per_class") < 1:
        raise ValueError("images_per_class must be >= 1")
    if not src.is_dir():
        raise FileNotFoundError(
            f"{src} does not exist: expected the unpacked Imagenet32_train release "
            "(train_data_batch_1 ... train_data_batch_10) from https://image-net.org/download-images"
        )
    batches = _batch_files(src)
    if not batches:
        raise FileNotFoundError(
            f"no train_data_batch_* files in {src}: expected the unpacked Imagenet32_train release "
            "(train_data_batch_1 ... train_data_batch_10) from https://image-net.org/download-images"
        )
    out.mkdir(parents=True, exist_ok=True)

    # Collect images per class; write a class as soon as it is complete to bound memory.
    pending: dict[int, list[np.ndarray]] = {}
    counts: dict[int, int] = {}
    done: set[int] = set()
    n_classes = 0
    for path in batches:
        data, labels = _read_batch(path)
        n_classes = max(n_classes, int(labels.max()) if len(labels) else 0)
        classes = labels - 1
        for c in np.unique(classes):
            c = int(c)
            if c in done:
                continue
            need = images_per_class - counts.get(c, 0)
            rows = data[classes == c][:need]
            pending.setdefault(c, []).append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            counts[c] = counts.get(c, 0) + len(rows)
            if counts[c] == images_per_class:
                _save_atomic(out / f"{c}.npy", np.ascontiguousarray(np.concatenate(pending.pop(c))))
                done.add(c)
        del data, labels, classes

    short = [c for c in range(n_classes) if c not in done]
    if short:
        shown = ", ".join(f"{c} ({counts.get(c, 0)})" for c in short[:10]) + (" ..." if len(short) > 10 else "")
        raise ValueError(
            f"{len(short)} of {n_classes} classes have fewer than {images_per_class} images in {src} "
            f"(class index (images found): {shown}); lower images_per_class or add the missing batches. "
            f"The {len(done)} complete classes were written to {out}."
        )


class CIFAR100Classes(ClassImages):
    """Smaller substitute: CIFAR-100 via torchvision (train 500 + test 100 per class), same binary-task protocol.

    Parameters
    ----------
    root : path-like, optional
        Directory for torchvision's ``cifar-100-python`` folder; defaults to
        ``$LOPBOOK_DATA``, then :func:`default_cache_dir`.
    download : bool
        Allow downloading with torchvision when the data are not on disk.
    """

    train_per_class = 500
    test_per_class = 100

    def __init__(self, root: str | os.PathLike[str] | None = None, download: bool = True) -> None:
        from torchvision.datasets import CIFAR100

        base = data_root(root) or default_cache_dir()
        try:
            train, test = CIFAR100(str(base), train=True), CIFAR100(str(base), train=False)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            if not download:
                raise DatasetUnavailable(
                    f"CIFAR-100 not found in {base} and download=False ({err}). Run "
                    f"`torchvision.datasets.CIFAR100({str(base)!r}, download=True)` on a machine with "
                    "internet access, or pass download=True."
                ) from err
            if not _reachable([CIFAR100.url]):
                raise DatasetUnavailable(
                    f"CIFAR-100 not found in {base} and {CIFAR100.url} is unreachable (offline?). Copy "
                    f"torchvision's cifar-100-python folder into {base}."
                ) from err
            try:
                with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                    train = CIFAR100(str(base), train=True, download=True)
                    test = CIFAR100(str(base), train=False)
            except Exception as download_err:
                raise DatasetUnavailable(f"downloading CIFAR-100 into {base} failed: {download_err}") from download_err

        self.root = base
        self.n_classes = 100
        self.name = "CIFAR-100 (100 classes, 500 train + 100 test per class; substitute for ImageNet)"
        self.warning = (
            "CIFAR-100 is used in place of the paper's ImageNet 32x32 data: results are not Continual ImageNet results."
        )
        train_y, test_y = np.asarray(train.targets), np.asarray(test.targets)
        self._images: list[np.ndarray] = []
        for c in range(self.n_classes):
            both = np.concatenate([train.data[train_y == c], test.data[test_y == c]])
            self._images.append(_channel_first(both, self.images_per_class, f"CIFAR-100 class {c}"))

    def images(self, c: int) -> np.ndarray:
        """Images of class ``c``: uint8 ``[600, 3, 32, 32]``, 500 train then 100 test."""
        return self._images[self._check_class(c)]


class DigitClasses(ClassImages):
    """Offline stand-in for the class-pair protocol: the ten digits as ten classes. Loudly labelled.

    The digits come from MNIST or, failing that, scikit-learn's 8x8 digits.
    28x28 images are zero-padded by 2 pixels on each side; 8x8 images are
    upsampled 4x by pixel repetition.  Grey levels are replicated to three
    channels and stored as ``uint8`` (``round(255 * x)``).  Each class takes
    its first images in dataset order: training images, then test images.

    Parameters
    ----------
    dataset : Dataset
        Digits, e.g. from :func:`mnist_or_digits`.
    train_per_class, test_per_class : int, optional
        Defaults: 600 / 100 for 28x28 MNIST (every digit has >= 892 test images),
        150 / 24 for the 8x8 digits (the rarest digit, 8, has 174 images).
    """

    def __init__(
        self,
        dataset: Dataset,
        train_per_class: int | None = None,
        test_per_class: int | None = None,
    ) -> None:
        if dataset.image_shape == (28, 28):
            default_split, source = (600, 100), "MNIST digits"
        elif dataset.image_shape == (8, 8):
            default_split, source = (150, 24), "scikit-learn 8x8 digits"
        else:
            raise ValueError(f"DigitClasses needs 28x28 or 8x8 images, got {dataset.image_shape}")
        self.train_per_class = _check_index(
            default_split[0] if train_per_class is None else train_per_class, "train_per_class"
        )
        self.test_per_class = _check_index(
            default_split[1] if test_per_class is None else test_per_class, "test_per_class"
        )
        if self.train_per_class < 1 or self.test_per_class < 1:
            raise ValueError("train_per_class and test_per_class must be >= 1")
        self.n_classes = dataset.n_classes
        self.dataset_name = dataset.name

        labels = dataset.y.numpy()
        counts = np.bincount(labels, minlength=self.n_classes)
        short = [c for c in range(self.n_classes) if counts[c] < self.images_per_class]
        if short:
            raise ValueError(
                f"{dataset.name}: classes {short} have fewer than {self.images_per_class} images "
                f"(counts {counts[short].tolist()}); lower train_per_class/test_per_class."
            )
        grey = np.rint(dataset.x.numpy() * 255.0).clip(0, 255).astype(np.uint8)
        grey = grey.reshape(len(dataset), *dataset.image_shape)
        if dataset.image_shape == (28, 28):
            grey = np.pad(grey, ((0, 0), (2, 2), (2, 2)))
        else:
            grey = grey.repeat(4, axis=1).repeat(4, axis=2)
        self._images = []
        for c in range(self.n_classes):
            picked = grey[np.flatnonzero(labels == c)[: self.images_per_class]]
            rgb = np.repeat(picked[:, None], 3, axis=1)
            rgb.setflags(write=False)
            self._images.append(rgb)

        self.name = f"{source} as 10 classes (stand-in for ImageNet, not ImageNet)"
        self.warning = (
            f"The class-pair tasks are built from {dataset.name}, used as 10 classes: this is a "
            "stand-in for ImageNet and results are NOT Continual ImageNet results. Prepare the "
            f"ImageNet 32x32 data (python -m lopbook.data prepare-imagenet32) and set {IMAGENET_ENV}."
        )
        if dataset.warning:
            self.warning += f" Moreover: {dataset.warning}"

    def images(self, c: int) -> np.ndarray:
        """Images of class ``c``: uint8 ``[train_per_class + test_per_class, 3, 32, 32]`` (read-only)."""
        return self._images[self._check_class(c)]


_CLASS_KINDS = ("auto", "imagenet", "cifar100", "digits")


def class_images(
    kind: str = "auto",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> ClassImages:
    """Choose the image source for the binary-task (Continual ImageNet) protocol.

    Parameters
    ----------
    kind : {"auto", "imagenet", "cifar100", "digits"}
        ``"auto"`` uses ImageNet32 if ``root`` or ``$LOPBOOK_IMAGENET`` is
        given, else CIFAR-100, else (with a :class:`DataWarning`) MNIST digits
        as classes via :func:`mnist_or_digits`.
    root : path-like, optional
        Data directory of the chosen kind: the ImageNet32 class files for
        ``"imagenet"``/``"auto"``, the torchvision root for ``"cifar100"``,
        the MNIST root for ``"digits"``.
    download : bool
        Allow torchvision downloads (CIFAR-100, MNIST).

    Returns
    -------
    ClassImages
    """
    if kind not in _CLASS_KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid kinds are {', '.join(map(repr, _CLASS_KINDS))}")
    imagenet_root = root if root is not None else (os.environ.get(IMAGENET_ENV, "").strip() or None)
    if kind == "imagenet":
        if imagenet_root is None:
            raise FileNotFoundError(
                f"class_images('imagenet') needs the ImageNet32 directory: pass root=... or set "
                f"{IMAGENET_ENV}. {_IMAGENET_HELP}"
            )
        return ImageNet32(imagenet_root)
    if kind == "cifar100":
        return CIFAR100Classes(root, download=download)
    if kind == "digits":
        return DigitClasses(mnist_or_digits(root, download=download))

    if imagenet_root is not None:
        return ImageNet32(imagenet_root)
    try:
        source: ClassImages = CIFAR100Classes(None, download=download)
    except DatasetUnavailable as err:
        source = DigitClasses(mnist_or_digits(None, download=download))
        warnings.warn(
            f"No ImageNet32 directory given ({IMAGENET_ENV} unset) and CIFAR-100 is unavailable ({err}); "
            f"using {source.name} built from {source.dataset_name}. Results are NOT Continual ImageNet "
            f"results. To use the real data run `python -m lopbook.data prepare-imagenet32 SRC OUT` "
            f"and set {IMAGENET_ENV}=OUT.",
            DataWarning,
            stacklevel=2,
        )
        return source
    warnings.warn(
        f"No ImageNet32 directory given ({IMAGENET_ENV} unset): using {source.name}. "
        f"Set {IMAGENET_ENV} to the prepared ImageNet 32x32 class files for the paper's setting.",
        DataWarning,
        stacklevel=2,
    )
    return source


class BinaryTaskStream:
    """Continual ImageNet protocol: task t discriminates classes ``order[2t]`` and ``order[2t+1]``.

    The class order repeats when tasks outnumber the pairs of classes.

    Parameters
    ----------
    source : ClassImages
        Where the images of each class come from.
    seed : int
        Non-negative seed; fixes the class order.
    """

    def __init__(self, source: ClassImages, seed: int) -> None:
        if source.n_classes < 2:
            raise ValueError(f"{source.name}: binary tasks need at least 2 classes, got {source.n_classes}")
        self.source = source
        self.seed = _check_index(seed, "seed")
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
        start = 2 * _check_index(task, "task") % (2 * self.n_pairs)
        return int(self._order[start]), int(self._order[start + 1])

    def task(self, task: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Data of ``task``: ``x_train, y_train, x_test, y_test``.

        ``x`` is float32 ``[2 * per_class, 3, 32, 32]`` in ``[0, 1]``, class ``a``
        first; ``y`` is int64 in ``{0, 1}``.  Training examples are not shuffled.
        """
        n_train, n_test = self.source.train_per_class, self.source.test_per_class
        pair = [self.source.images(c) for c in self.classes(task)]
        for c, images in zip(self.classes(task), pair, strict=True):
            if images.shape != (n_train + n_test, 3, 32, 32) or images.dtype != np.uint8:
                raise ValueError(f"{self.source.name}: class {c} gave {images.dtype} {images.shape}")

        def stack(part: slice, n: int) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.from_numpy(np.concatenate([images[part] for images in pair])).to(torch.float32).div_(255.0)
            y = torch.cat([torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64)])
            return x, y

        x_train, y_train = stack(slice(0, n_train), n_train)
        x_test, y_test = stack(slice(n_train, n_train + n_test), n_test)
        return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m lopbook.data prepare-imagenet32 SRC OUT``."""
    parser = argparse.ArgumentParser(prog="python -m lopbook.data", description="lopbook data utilities")
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser(
        "prepare-imagenet32",
        help="convert the official Imagenet32 training batches into per-class .npy files",
        description=prepare_imagenet32.__doc__.split("\n\n")[0] if prepare_imagenet32.__doc__ else None,
    )
    prepare.add_argument("src", type=Path, help="folder with train_data_batch_1 ... train_data_batch_10")
    prepare.add_argument("out", type=Path, help="output folder for 0.npy ... 999.npy")
    prepare.add_argument("--images-per-class", type=int, default=700, help="images kept per class (default 700)")
    args = parser.parse_args(argv)
    try:
        prepare_imagenet32(args.src, args.out, images_per_class=args.images_per_class)
    except (OSError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    print(f"wrote class files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
