"""MNIST: the IDX file format, :class:`Dataset`, and the loaders with their fallback.

:func:`load_mnist` reads MNIST's IDX files (downloading them with torchvision
if allowed); :func:`mnist_or_digits` falls back to scikit-learn's 8x8 digits,
loudly, when MNIST is unavailable.
"""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import locations
from .errors import DataWarning, MNISTUnavailable
from .identity import array_digest
from .locations import (
    CONNECT_TIMEOUT_S,
    DATA_ENV,
    DOWNLOAD_TIMEOUT_S,
    data_root,
    default_cache_dir,
)

__all__ = [
    "read_idx",
    "Dataset",
    "load_mnist",
    "load_digits_fallback",
    "mnist_or_digits",
]

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


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        try:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                    return unzipped.read()
            return handle.read()
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"{path}: not an IDX file (cannot decompress it: {err}); "
                "delete it and download it again"
            ) from None


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
    raw = _read_bytes(path)
    if (
        len(raw) < 4
        or raw[0] != 0
        or raw[1] != 0
        or raw[2] not in _IDX_DTYPES
        or raw[3] == 0
    ):
        codes = ", ".join(f"{c:02x}" for c in _IDX_DTYPES)
        raise ValueError(
            f"{path}: not an IDX file (expected magic bytes 00 00 <type in {codes}> "
            f"<ndim >= 1>, got {raw[:4].hex(' ') or 'an empty file'})"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(
            f"{path}: not an IDX file (header announces {ndim} dimensions "
            "but is truncated)"
        )
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    expected, actual = count * dtype.itemsize, len(raw) - offset
    if actual != expected:
        raise ValueError(
            f"{path}: not an IDX file or a damaged one (header says shape {shape} of "
            f"{dtype.name}, i.e. {expected} payload bytes, but the file holds "
            f"{actual}); a truncated download? Delete it and download it again"
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
    kind : str
        Short name that starts :attr:`identity`, e.g. ``"mnist-test"``.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    image_shape: tuple[int, int]
    warning: str | None = None
    kind: str = "dataset"
    _identity: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.dtype != torch.float32:
            raise ValueError(
                "Dataset.x must be a float32 [N, D] tensor, "
                f"got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if (
            self.y.ndim != 1
            or self.y.dtype != torch.int64
            or len(self.y) != len(self.x)
        ):
            raise ValueError(
                f"Dataset.y must be an int64 [N] tensor with N = {len(self.x)}, "
                f"got {self.y.dtype} {tuple(self.y.shape)}"
            )
        self.image_shape = (int(self.image_shape[0]), int(self.image_shape[1]))
        if self.image_shape[0] * self.image_shape[1] != self.x.shape[1]:
            raise ValueError(
                f"image_shape {self.image_shape} does not match "
                f"D = {self.x.shape[1]} features"
            )
        if len(self.y) and (
            int(self.y.min()) < 0 or int(self.y.max()) >= self.n_classes
        ):
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1}")

    @property
    def n_features(self) -> int:
        """Number of pixels per flattened image, ``D``."""
        return int(self.x.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes: always the ten digits."""
        return 10

    @property
    def identity(self) -> str:
        """``"<kind>-<N>-<hash>"``: the same for the same images and labels only.

        The hash is SHA-1 of the image shape and of the bytes of ``x`` and
        ``y``; it is computed on first use and cached, so do not modify ``x``
        or ``y`` in place afterwards.
        """
        if self._identity is None:
            arrays = (t.detach().cpu().numpy() for t in (self.x, self.y))
            digest = array_digest(arrays, header=f"{self.image_shape}")
            self._identity = f"{self.kind}-{len(self)}-{digest}"
        return self._identity

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
    + ". Put them in ROOT/MNIST/raw/ (torchvision's layout; ROOT/ or ROOT/raw/ work "
    f"too) and pass root=ROOT or set {DATA_ENV}=ROOT. torchvision can fetch them: "
    "`torchvision.datasets.MNIST(ROOT, download=True)` on a machine with internet "
    "access."
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


def _read_mnist_split(
    image_file: Path, label_file: Path
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{image_file}: expected MNIST images, uint8 N x 28 x 28, "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{label_file}: expected MNIST labels, uint8 of shape (N,), "
            f"got {labels.dtype} {labels.shape}"
        )
    if len(labels) and labels.max() > 9:
        raise ValueError(
            f"{label_file}: MNIST labels must be digits 0..9, found {int(labels.max())}"
        )
    if len(labels) != len(images):
        raise ValueError(
            f"{label_file}: holds {len(labels)} labels but {image_file} "
            f"holds {len(images)} images"
        )
    return images, labels


def _download_mnist(base: Path) -> None:
    """Fetch MNIST into ``base/MNIST/raw``; raise MNISTUnavailable on failure."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as err:
        raise MNISTUnavailable(
            f"cannot download MNIST: torchvision is not installed ({err}). "
            + _MNIST_LAYOUT,
            reason="torchvision is not installed, so it cannot be downloaded",
        ) from err
    if not locations.reachable(MNIST.mirrors):
        raise MNISTUnavailable(
            f"cannot download MNIST into {base}: no download server answered within "
            f"{CONNECT_TIMEOUT_S:g} s (offline?). {_MNIST_LAYOUT}",
            reason="not on disk and the download servers are unreachable",
        )
    try:
        with locations.socket_timeout(DOWNLOAD_TIMEOUT_S):
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
        Images flattened to 784 features, scaled to ``[0, 1]``; ``kind`` is
        ``"mnist-train"``, ``"mnist-test"`` or ``"mnist-train+test"``.

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
        origin = (
            "root argument" if root is not None else f"{DATA_ENV} environment variable"
        )
        raise FileNotFoundError(
            f"MNIST data directory {explicit} (from the {origin}) does not exist "
            f"or is not a directory. {_MNIST_LAYOUT}"
        )
    base = explicit if explicit is not None else default_cache_dir()
    dirs = _mnist_dirs(base)

    on_disk = _mnist_on_disk(dirs)
    wanted = _wanted_splits(split, on_disk)
    missing = [s for s in wanted if s not in on_disk]
    if missing:
        if not download:
            raise MNISTUnavailable(
                f"MNIST {'/'.join(missing)} split not found in "
                f"{', '.join(map(str, dirs))} and download=False. {_MNIST_LAYOUT}",
                reason=f"{'/'.join(missing)} split not found under {base} "
                "and download=False",
            )
        _download_mnist(base)
        on_disk = _mnist_on_disk(dirs)
        wanted = _wanted_splits(split, on_disk)
        missing = [s for s in wanted if s not in on_disk]
        if missing:
            raise MNISTUnavailable(
                f"the MNIST download into {base} did not produce the "
                f"{'/'.join(missing)} files. {_MNIST_LAYOUT}",
                reason="the download did not produce the expected files",
            )

    parts = [_read_mnist_split(*on_disk[s]) for s in wanted]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    which = "+".join(wanted)
    plural = "s" if len(wanted) > 1 else ""
    return Dataset(
        x=x,
        y=y,
        name=f"MNIST {which} split{plural} ({len(y):,} images)",
        image_shape=(28, 28),
        kind=f"mnist-{which}",
    )


def load_digits_fallback() -> Dataset:
    """Load scikit-learn's 8x8 digits as a loudly labelled MNIST substitute.

    Returns
    -------
    Dataset
        1,797 real 8x8 images (64 features) scaled from ``0..16`` to
        ``[0, 1]``, with ``warning`` set and ``kind == "digits8x8"``.
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
        warning=(
            "This is scikit-learn's 8x8 digits data set used in place of MNIST: "
            "results are NOT MNIST results."
        ),
        kind="digits8x8",
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
            f"MNIST is not available ({err.reason}): falling back to scikit-learn's "
            "8x8 digits (1,797 images); results are NOT MNIST results. "
            f"Set {DATA_ENV}=/path/to/dir containing MNIST/raw/*-ubyte[.gz] "
            "or allow download (download=True on a machine with internet access)."
        )
        warnings.warn(message, DataWarning, stacklevel=2)
        dataset = load_digits_fallback()
        dataset.warning = message
        return dataset
