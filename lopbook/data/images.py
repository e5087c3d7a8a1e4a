"""Images grouped by class, the sources of the Continual ImageNet (class-pair) tasks.

* :class:`ClassFolder` (alias :data:`ImageNet32`): a folder of per-class
  ``<c>.npy`` files, e.g. the paper's ImageNet 32x32 data or Tiny ImageNet,
  with the train/test split declared in ``lopbook.json`` or recognised from
  the layout.
* :class:`CIFAR100Classes`, :class:`DigitClasses`: smaller substitutes,
  labelled as such.
* :func:`class_images`: picks one of them.
"""

from __future__ import annotations

import abc
import functools
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import locations
from .errors import DatasetUnavailable, DataWarning, check_index
from .identity import array_digest, file_digest
from .locations import (
    DOWNLOAD_TIMEOUT_S,
    IMAGENET_ENV,
    TINYIMAGENET_ENV,
    data_root,
    default_cache_dir,
    env_path,
)
from .mnist import Dataset, mnist_or_digits

__all__ = [
    "METADATA_FILE",
    "CLASSES_FILE",
    "CLASS_KINDS",
    "ClassImages",
    "ClassFolder",
    "ImageNet32",
    "CIFAR100Classes",
    "DigitClasses",
    "class_images",
    "imagenet32_name",
    "tinyimagenet_name",
    "short_class_name",
]

#: Metadata file of a class folder: ``name``, ``train_per_class``, ``test_per_class``.
METADATA_FILE = "lopbook.json"
#: Class names of a class folder: tab-separated ``index``, ``wnid``, ``name``.
CLASSES_FILE = "classes.tsv"
#: The kinds :func:`class_images` accepts.
CLASS_KINDS = ("auto", "imagenet", "cifar100", "digits", "tinyimagenet")

_CLASS_FILE = re.compile(r"(0|[1-9][0-9]*)\.npy")
_METADATA_EXAMPLE = (
    '{"name": "my images (200 classes)", "train_per_class": 500, "test_per_class": 50}'
)
_FOLDER_HELP = (
    "Expected a folder holding one file per class named <class index>.npy (0.npy, "
    "1.npy, ...), each a uint8 array of shape (N, 32, 32, 3) or (N, 3, 32, 32): the "
    "first train_per_class images train, the rest test. The split is read from "
    f"{METADATA_FILE} ({_METADATA_EXAMPLE}); without it, 700 images per class are "
    "the authors' ImageNet 32x32 layout (600 + 100) and 550 with a classes.tsv are "
    "Tiny ImageNet (500 + 50). The paper's authors distribute the ImageNet data; see "
    "lop/imagenet/README.md in https://github.com/shibhansh/loss-of-plasticity. To "
    "build it from the official Downsampled ImageNet 32x32 release (Chrabaszcz et al. "
    "2017, Imagenet32_train from https://image-net.org/download-images), run: python "
    "-m lopbook.data prepare-imagenet32 SRC OUT, then pass OUT as root or set "
    f"{IMAGENET_ENV}=OUT. For Tiny ImageNet (http://cs231n.stanford.edu/"
    "tiny-imagenet-200.zip) run: python -m lopbook.data prepare-tinyimagenet SRC OUT "
    f"and set {TINYIMAGENET_ENV}=OUT."
)


def imagenet32_name(n_classes: int, split: tuple[int, int] = (600, 100)) -> str:
    """Name of an ImageNet 32x32 folder, e.g. ``"ImageNet 32x32 (1000 classes)"``."""
    detail = "" if split == (600, 100) else f", {split[0]} + {split[1]} per class"
    return f"ImageNet 32x32 ({n_classes} classes{detail})"


def tinyimagenet_name(n_classes: int) -> str:
    """Name of a Tiny ImageNet class folder; says it is not the paper's Imagenet32."""
    return (
        f"Tiny ImageNet 32x32 ({n_classes} classes, real ImageNet photographs; "
        "a smaller stand-in for Imagenet32)"
    )


def short_class_name(name: str) -> str:
    """First synonym of a WordNet name: ``"goldfish, Carassius auratus"`` -> goldfish"""
    return name.split(",", 1)[0].strip()


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
    kind : str
        Short name of the source, the start of :attr:`identity`.
    class_names : list of str or None
        Name of each class, if known.
    """

    name: str
    warning: str | None = None
    n_classes: int
    train_per_class: int
    test_per_class: int
    kind: str = "classes"
    class_names: list[str] | None = None
    _identity: str | None = None

    @property
    def images_per_class(self) -> int:
        """``train_per_class + test_per_class``."""
        return self.train_per_class + self.test_per_class

    @property
    def identity(self) -> str:
        """``"<kind>-<n_classes>c-<train>+<test>-<hash>"``, for run keys.

        Equal for equal data only: the hash covers the images (here all of
        them; :class:`ClassFolder` hashes less).  Computed once, then cached.
        """
        if self._identity is None:
            arrays = (self.images(c) for c in range(self.n_classes))
            self._identity = self._identity_of(array_digest(arrays, header=self.kind))
        return self._identity

    def _identity_of(self, digest: str) -> str:
        split = f"{self.train_per_class}+{self.test_per_class}"
        return f"{self.kind}-{self.n_classes}c-{split}-{digest}"

    def _check_class(self, c: int) -> int:
        c = check_index(c, "class index")
        if c >= self.n_classes:
            raise IndexError(
                f"class {c} out of range: {self.name} has {self.n_classes} classes"
            )
        return c

    @abc.abstractmethod
    def images(self, c: int) -> np.ndarray:
        """All images of class ``c``: uint8 ``[images_per_class, 3, 32, 32]``.

        The first ``train_per_class`` are for training, the rest for testing.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}>"


def _channel_first(
    array: np.ndarray, n_images: int, source: object, hint: str = _FOLDER_HELP
) -> np.ndarray:
    """Check a uint8 ``(n, 32, 32, 3)`` or ``(n, 3, 32, 32)`` array; return it CHW."""
    if array.dtype != np.uint8:
        raise ValueError(
            f"{source}: expected uint8 images, got dtype {array.dtype}. {hint}"
        )
    if array.ndim == 4 and array.shape[0] == n_images:
        if array.shape[1:] == (32, 32, 3):
            return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
        if array.shape[1:] == (3, 32, 32):
            return np.ascontiguousarray(array)
    raise ValueError(
        f"{source}: expected shape ({n_images}, 32, 32, 3) or ({n_images}, 3, 32, 32), "
        f"got {array.shape}. {hint}"
    )


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"{path}: not a plain .npy array ({err}); replace the file. {_FOLDER_HELP}"
        ) from None


def _positive(value: Any, what: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{path}: {what} must be a positive integer, got {value!r}; "
            f"expected e.g. {_METADATA_EXAMPLE}"
        )
    return value


def _read_metadata(root: Path) -> dict[str, Any] | None:
    """The checked content of ``root/lopbook.json``, or ``None`` if there is none."""
    path = root / METADATA_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path}: not valid JSON ({err}); expected e.g. {_METADATA_EXAMPLE}"
        ) from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object such as {_METADATA_EXAMPLE}")
    for key in ("train_per_class", "test_per_class"):
        _positive(meta.get(key), key, path)
    for key in ("name", "kind"):
        if key in meta and not (isinstance(meta[key], str) and meta[key].strip()):
            raise ValueError(f"{path}: {key!r} must be a non-empty string")
    return meta


def _read_classes(root: Path, n_classes: int) -> tuple[list[str], list[str]] | None:
    """``(ids, names)`` from ``root/classes.tsv``, or ``None`` if there is none."""
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    ids, names = [], []
    for k, row in enumerate(rows):
        if len(row) != 3 or row[0].strip() != str(k):
            raise ValueError(
                f"{path}: line {k + 2} should be '{k}<TAB>wnid<TAB>name', got "
                f"{lines[k + 1]!r}; the file is a header line then one line per class"
            )
        ids.append(row[1].strip())
        names.append(row[2].strip())
    if len(rows) != n_classes:
        raise ValueError(
            f"{path}: names {len(rows)} classes but the folder holds {n_classes} "
            "class files; rewrite it or remove it"
        )
    return ids, names


class ClassFolder(ClassImages):
    """A folder of per-class ``.npy`` files, e.g. ImageNet 32x32 or Tiny ImageNet.

    ``<c>.npy`` holds class ``c``: uint8 ``(N, 32, 32, 3)`` or ``(N, 3, 32, 32)``,
    the ``train_per_class`` training images then the ``test_per_class`` test
    images.  The split and the name come from ``lopbook.json`` (written by
    ``python -m lopbook.data prepare-imagenet32`` / ``prepare-tinyimagenet``).
    Without it, ``N == 700`` is the paper's ImageNet 32x32 layout (600 + 100)
    and ``N == 550`` with a ``classes.tsv`` is Tiny ImageNet (500 + 50).
    ``classes.tsv`` (header, then ``index<TAB>wnid<TAB>name``) gives
    :attr:`class_ids` and :attr:`class_names`.

    Class files are read lazily, when :meth:`images` first asks for them, and
    the 64 most recently used classes are kept in memory.

    Parameters
    ----------
    root : path-like
        The folder (see :func:`~lopbook.data.prepare_imagenet32` and
        :func:`~lopbook.data.prepare_tinyimagenet`).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"class folder {self.root} does not exist. {_FOLDER_HELP}"
            )
        indices = sorted(
            int(m.group(1))
            for p in self.root.iterdir()
            if (m := _CLASS_FILE.fullmatch(p.name)) and p.is_file()
        )
        if not indices:
            raise FileNotFoundError(
                f"no class files (0.npy, 1.npy, ...) in {self.root}. {_FOLDER_HELP}"
            )
        if indices != list(range(len(indices))):
            missing = sorted(set(range(indices[-1] + 1)) - set(indices))
            shown = ", ".join(f"{i}.npy" for i in missing[:10])
            shown += " ..." if len(missing) > 10 else ""
            raise ValueError(
                f"class files in {self.root} must be numbered 0..K-1 without gaps; "
                f"missing {shown}. {_FOLDER_HELP}"
            )
        self.n_classes = len(indices)
        classes = _read_classes(self.root, self.n_classes)
        self.class_ids, self.class_names = classes if classes else (None, None)
        self.metadata = _read_metadata(self.root)
        self.warning = None
        if self.metadata is not None:
            self.train_per_class = self.metadata["train_per_class"]
            self.test_per_class = self.metadata["test_per_class"]
            self.kind = self.metadata.get("kind", "classfolder")
            default = f"class folder {self.root.name} ({self.n_classes} classes)"
            self.name = self.metadata.get("name", default)
            self._split_from = f"{self.root / METADATA_FILE}"
        else:
            self._infer_layout(classes is not None)
        self._load = functools.lru_cache(maxsize=64)(self._load_class)

    def _infer_layout(self, has_classes_file: bool) -> None:
        first = self.path(0)
        n_images = _load_npy(first).shape[:1]
        if n_images == (700,):
            self.train_per_class, self.test_per_class = 600, 100
            self.kind, self.name = "imagenet32", imagenet32_name(self.n_classes)
            layout = "ImageNet 32x32 layout, 700 = 600 + 100"
        elif n_images == (550,) and has_classes_file:
            self.train_per_class, self.test_per_class = 500, 50
            self.kind, self.name = "tinyimagenet", tinyimagenet_name(self.n_classes)
            layout = "Tiny ImageNet layout, 550 = 500 + 50"
        else:
            found = f"{n_images[0]} images" if n_images else "no image axis"
            raise ValueError(
                f"{self.root}: cannot tell the train/test split: {first.name} holds "
                f"{found}, and there is no {METADATA_FILE}. Declare the split in "
                f"{self.root / METADATA_FILE}, e.g. {_METADATA_EXAMPLE}. {_FOLDER_HELP}"
            )
        self._split_from = f"{layout}, from {first.name}"

    def path(self, c: int) -> Path:
        """File holding class ``c``."""
        return self.root / f"{self._check_class(c)}.npy"

    @property
    def identity(self) -> str:
        """``"<kind>-<n_classes>c-<train>+<test>-<hash>"``, for run keys.

        The hash covers the names and sizes of all class files and the full
        bytes of the first, middle and last ones and of ``classes.tsv`` and
        ``lopbook.json``; a change inside another class file that keeps its
        size is not seen.
        """
        if self._identity is None:
            listing = [
                (p.name, p.stat().st_size)
                for p in map(self.path, range(self.n_classes))
            ]
            picked = sorted({0, self.n_classes // 2, self.n_classes - 1})
            files = [self.path(c) for c in picked]
            files += [
                self.root / name
                for name in (CLASSES_FILE, METADATA_FILE)
                if (self.root / name).is_file()
            ]
            self._identity = self._identity_of(file_digest(listing, files))
        return self._identity

    def _load_class(self, c: int) -> np.ndarray:
        path = self.path(c)
        array = _load_npy(path)
        hint = (
            f"Every class file here must hold {self.images_per_class} images "
            f"({self.train_per_class} train + {self.test_per_class} test; "
            f"split from {self._split_from}). {_FOLDER_HELP}"
        )
        images = _channel_first(array, self.images_per_class, path, hint)
        images.setflags(write=False)  # shared through the cache
        return images

    def images(self, c: int) -> np.ndarray:
        """Images of class ``c``: uint8 ``[images_per_class, 3, 32, 32]``, read-only."""
        return self._load(self._check_class(c))


#: The former name of :class:`ClassFolder`.
ImageNet32 = ClassFolder


class CIFAR100Classes(ClassImages):
    """Smaller substitute: CIFAR-100 (500 train + 100 test per class) via torchvision.

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
    kind = "cifar100"

    def __init__(
        self, root: str | os.PathLike[str] | None = None, download: bool = True
    ) -> None:
        from torchvision.datasets import CIFAR100

        base = data_root(root) or default_cache_dir()
        try:
            train, test = (
                CIFAR100(str(base), train=True),
                CIFAR100(str(base), train=False),
            )
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            if not download:
                raise DatasetUnavailable(
                    f"CIFAR-100 not found in {base} and download=False ({err}). Run "
                    f"`torchvision.datasets.CIFAR100({str(base)!r}, download=True)` "
                    "on a machine with internet access, or pass download=True."
                ) from err
            if not locations.reachable([CIFAR100.url]):
                raise DatasetUnavailable(
                    f"CIFAR-100 not found in {base} and {CIFAR100.url} is unreachable "
                    "(offline?). Copy torchvision's cifar-100-python folder into "
                    f"{base}."
                ) from err
            try:
                with locations.socket_timeout(DOWNLOAD_TIMEOUT_S):
                    train = CIFAR100(str(base), train=True, download=True)
                    test = CIFAR100(str(base), train=False)
            except Exception as download_err:
                raise DatasetUnavailable(
                    f"downloading CIFAR-100 into {base} failed: {download_err}"
                ) from download_err

        self.root = base
        self.n_classes = 100
        self.class_names = list(train.classes)
        self.name = (
            "CIFAR-100 (100 classes, 500 train + 100 test per class; "
            "substitute for ImageNet)"
        )
        self.warning = (
            "CIFAR-100 is used in place of the paper's ImageNet 32x32 data: "
            "results are not Continual ImageNet results."
        )
        train_y, test_y = np.asarray(train.targets), np.asarray(test.targets)
        self._images: list[np.ndarray] = []
        for c in range(self.n_classes):
            both = np.concatenate([train.data[train_y == c], test.data[test_y == c]])
            images = _channel_first(
                both, self.images_per_class, f"CIFAR-100 class {c}", ""
            )
            images.setflags(write=False)
            self._images.append(images)

    def images(self, c: int) -> np.ndarray:
        """Images of class ``c``: uint8 ``[600, 3, 32, 32]``, 500 train, 100 test."""
        return self._images[self._check_class(c)]


class DigitClasses(ClassImages):
    """Offline stand-in for the class-pair protocol: the ten digits as ten classes.

    Loudly labelled.  The digits come from MNIST or, failing that,
    scikit-learn's 8x8 digits.  28x28 images are zero-padded by 2 pixels on
    each side; 8x8 images are upsampled 4x by pixel repetition.  Grey levels
    are replicated to three channels and stored as ``uint8``
    (``round(255 * x)``).  Each class takes its first images in dataset
    order: training images, then test images.

    Parameters
    ----------
    dataset : Dataset
        Digits, e.g. from :func:`mnist_or_digits`.
    train_per_class, test_per_class : int, optional
        Defaults: 600 / 100 for 28x28 MNIST (every digit has >= 892 test
        images), 150 / 24 for the 8x8 digits (the rarest digit, 8, has 174).
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
            raise ValueError(
                f"DigitClasses needs 28x28 or 8x8 images, got {dataset.image_shape}"
            )
        self.train_per_class = check_index(
            default_split[0] if train_per_class is None else train_per_class,
            "train_per_class",
        )
        self.test_per_class = check_index(
            default_split[1] if test_per_class is None else test_per_class,
            "test_per_class",
        )
        if self.train_per_class < 1 or self.test_per_class < 1:
            raise ValueError("train_per_class and test_per_class must be >= 1")
        self.n_classes = dataset.n_classes
        self.class_names = [str(d) for d in range(self.n_classes)]
        self.dataset_name = dataset.name
        self.kind = f"digits-{dataset.kind}"

        labels = dataset.y.numpy()
        counts = np.bincount(labels, minlength=self.n_classes)
        short = [c for c in range(self.n_classes) if counts[c] < self.images_per_class]
        if short:
            raise ValueError(
                f"{dataset.name}: classes {short} have fewer than "
                f"{self.images_per_class} images (counts {counts[short].tolist()}); "
                "lower train_per_class/test_per_class."
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
            f"The class-pair tasks are built from {dataset.name}, used as 10 classes: "
            "this is a stand-in for ImageNet and results are NOT Continual ImageNet "
            "results. Prepare the ImageNet 32x32 data (python -m lopbook.data "
            f"prepare-imagenet32) and set {IMAGENET_ENV}."
        )
        if dataset.warning:
            self.warning += f" Moreover: {dataset.warning}"

    def images(self, c: int) -> np.ndarray:
        """Images of class ``c``: uint8 ``[images_per_class, 3, 32, 32]``, read-only."""
        return self._images[self._check_class(c)]


def class_images(
    kind: str = "auto",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> ClassImages:
    """Choose the image source for the binary-task (Continual ImageNet) protocol.

    Parameters
    ----------
    kind : {"auto", "imagenet", "tinyimagenet", "cifar100", "digits"}
        ``"auto"`` uses the class folder ``root`` or ``$LOPBOOK_IMAGENET`` if
        given, else ``$LOPBOOK_TINYIMAGENET`` if set, else CIFAR-100, else
        MNIST digits as classes via :func:`mnist_or_digits`; the last two with
        a :class:`DataWarning`.
    root : path-like, optional
        Data directory of the chosen kind: the class folder for
        ``"imagenet"``, ``"tinyimagenet"`` and ``"auto"``, the torchvision
        root for ``"cifar100"``, the MNIST root for ``"digits"``.
    download : bool
        Allow torchvision downloads (CIFAR-100, MNIST).

    Returns
    -------
    ClassImages
    """
    if kind not in CLASS_KINDS:
        valid = ", ".join(map(repr, CLASS_KINDS))
        raise ValueError(f"unknown kind {kind!r}; valid kinds are {valid}")
    imagenet_root = (
        Path(root).expanduser() if root is not None else env_path(IMAGENET_ENV)
    )
    if kind == "imagenet":
        if imagenet_root is None:
            raise FileNotFoundError(
                "class_images('imagenet') needs the ImageNet32 directory: pass "
                f"root=... or set {IMAGENET_ENV}. {_FOLDER_HELP}"
            )
        return ClassFolder(imagenet_root)
    if kind == "tinyimagenet":
        tiny_root = (
            Path(root).expanduser() if root is not None else env_path(TINYIMAGENET_ENV)
        )
        if tiny_root is None:
            raise FileNotFoundError(
                "class_images('tinyimagenet') needs a prepared Tiny ImageNet class "
                f"folder: pass root=... or set {TINYIMAGENET_ENV}. Make one from the "
                "official release (http://cs231n.stanford.edu/tiny-imagenet-200.zip, "
                "the zip file or its unzipped tiny-imagenet-200 folder) with: "
                "python -m lopbook.data prepare-tinyimagenet SRC OUT, then set "
                f"{TINYIMAGENET_ENV}=OUT."
            )
        return ClassFolder(tiny_root)
    if kind == "cifar100":
        return CIFAR100Classes(root, download=download)
    if kind == "digits":
        return DigitClasses(mnist_or_digits(root, download=download))

    if imagenet_root is not None:
        return ClassFolder(imagenet_root)
    tiny_root = env_path(TINYIMAGENET_ENV)
    if tiny_root is not None:
        return ClassFolder(tiny_root)
    unset = f"{IMAGENET_ENV} and {TINYIMAGENET_ENV} unset"
    try:
        source: ClassImages = CIFAR100Classes(None, download=download)
    except DatasetUnavailable as err:
        source = DigitClasses(mnist_or_digits(None, download=download))
        assert isinstance(source, DigitClasses)
        warnings.warn(
            f"No ImageNet32 or Tiny ImageNet class folder given ({unset}) and "
            f"CIFAR-100 is unavailable ({err}); using {source.name} built from "
            f"{source.dataset_name}. Results are NOT Continual ImageNet results. To "
            "use the real data run `python -m lopbook.data prepare-imagenet32 SRC OUT` "
            f"and set {IMAGENET_ENV}=OUT.",
            DataWarning,
            stacklevel=2,
        )
        return source
    warnings.warn(
        f"No ImageNet32 or Tiny ImageNet class folder given ({unset}): using "
        f"{source.name}. Set {IMAGENET_ENV} to the prepared ImageNet 32x32 class files "
        "for the paper's setting.",
        DataWarning,
        stacklevel=2,
    )
    return source
