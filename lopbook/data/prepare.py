"""Convert official data releases into class folders (see :class:`ClassFolder`).

* :func:`prepare_imagenet32`: the Downsampled ImageNet 32x32 training batches.
* :func:`prepare_tinyimagenet`: the Tiny ImageNet-200 release, box-averaged to
  32x32.

Both write ``<c>.npy`` per class, uint8 ``(N, 32, 32, 3)``, and last a
``lopbook.json`` declaring the name and the train/test split.  Every file is
written atomically (:func:`lopbook.io.atomic_write`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write, write_text
from .errors import check_index
from .images import (
    CLASSES_FILE,
    METADATA_FILE,
    imagenet32_name,
    tinyimagenet_name,
)

__all__ = [
    "save_npy",
    "write_metadata",
    "box_downsample",
    "prepare_imagenet32",
    "prepare_tinyimagenet",
]

_IMAGENET32_RELEASE = (
    "expected the unpacked Imagenet32_train release (train_data_batch_1 ... "
    "train_data_batch_10) from https://image-net.org/download-images"
)
_TINY_RELEASE = (
    "expected the official Tiny ImageNet release "
    "(http://cs231n.stanford.edu/tiny-imagenet-200.zip): the zip file itself or its "
    "unzipped tiny-imagenet-200 folder, holding wnids.txt, words.txt, "
    "train/<wnid>/images/<wnid>_<k>.JPEG and val/images/val_<k>.JPEG with "
    "val/val_annotations.txt"
)


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as a plain ``.npy`` file, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.save would add ".npy"
            np.save(handle, array, allow_pickle=False)

    atomic_write(path, write)


def write_metadata(
    out: str | os.PathLike[str],
    name: str,
    train_per_class: int,
    test_per_class: int,
    **extra: Any,
) -> None:
    """Write ``out/lopbook.json``, the class folder's name and split, atomically."""
    meta = {
        "name": name,
        "train_per_class": int(train_per_class),
        "test_per_class": int(test_per_class),
        **extra,
    }
    write_text(Path(out) / METADATA_FILE, json.dumps(meta, indent=2) + "\n")


def box_downsample(images: np.ndarray) -> np.ndarray:
    """Halve height and width: each pixel the mean of a 2x2 block, rounded half up.

    Parameters
    ----------
    images : numpy.ndarray
        uint8 ``(..., H, W, C)`` with even ``H`` and ``W``, e.g. ``(N, 64, 64, 3)``.

    Returns
    -------
    numpy.ndarray
        uint8 ``(..., H // 2, W // 2, C)``.
    """
    if (
        images.dtype != np.uint8
        or images.ndim < 3
        or any(n % 2 for n in images.shape[-3:-1])
    ):
        raise ValueError(
            f"expected uint8 (..., H, W, C) with even H and W, got {images.dtype} "
            f"{images.shape}"
        )
    *lead, height, width, channels = images.shape
    blocks = images.reshape(*lead, height // 2, 2, width // 2, 2, channels)
    total = blocks.sum(axis=(-4, -2), dtype=np.uint16)
    return ((total + 2) // 4).astype(np.uint8)


# --------------------------------------------------------------------------
# Imagenet32 (Chrabaszcz, Loshchilov & Hutter, 2017)
# --------------------------------------------------------------------------


def _batch_files(src: Path) -> list[Path]:
    pattern = re.compile(r"train_data_batch_([0-9]+)(\.npz)?")
    found = [
        (int(m.group(1)), p)
        for p in src.iterdir()
        if (m := pattern.fullmatch(p.name)) and p.is_file()
    ]
    return [p for _, p in sorted(found)]


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            batch = {"data": archive["data"], "labels": archive["labels"]}
    else:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        if isinstance(batch, dict):  # Python 2 pickles may use byte-string keys
            batch = {
                k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()
            }
    try:
        data = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(
            f"{path}: expected a dict with 'data' and 'labels' ({err})"
        ) from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{path}: 'data' must be uint8 [N, 3072] (32x32 RGB planes), "
            f"got {data.dtype} {data.shape}"
        )
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(labels)} labels for {len(data)} images")
    if len(labels) and labels.min() < 1:
        raise ValueError(
            f"{path}: labels must start at 1 (official release), found {labels.min()}"
        )
    return data, labels


def prepare_imagenet32(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    images_per_class: int = 700,
    test_per_class: int | None = None,
) -> None:
    """Convert the official Downsampled ImageNet 32x32 release into class files.

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
        uint8 ``(images_per_class, 32, 32, 3)``, each written atomically, and
        then ``lopbook.json`` with the name and split.
    images_per_class : int
        Keep the first this many images of each class, in batch order (>= 2).
    test_per_class : int, optional
        How many of them are test images (the last ones); default
        ``max(1, images_per_class // 7)``, the paper's 600 + 100 for 700.

    Raises
    ------
    FileNotFoundError
        If ``src`` or its batch files are missing.
    ValueError
        If a batch is malformed or a class has fewer than ``images_per_class``
        images.
    """
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if check_index(images_per_class, "images_per_class") < 2:
        raise ValueError("images_per_class must be >= 2 (train and test images)")
    if test_per_class is None:
        test_per_class = max(1, images_per_class // 7)
    if not 1 <= check_index(test_per_class, "test_per_class") < images_per_class:
        raise ValueError(
            f"test_per_class must lie in 1..{images_per_class - 1}, "
            f"got {test_per_class}"
        )
    if not src.is_dir():
        raise FileNotFoundError(f"{src} does not exist: {_IMAGENET32_RELEASE}")
    batches = _batch_files(src)
    if not batches:
        raise FileNotFoundError(
            f"no train_data_batch_* files in {src}: {_IMAGENET32_RELEASE}"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / METADATA_FILE).unlink(missing_ok=True)  # written again once all classes are

    # Collect images per class; write a class once it is complete (bounded memory).
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
            pending.setdefault(c, []).append(
                rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            )
            counts[c] = counts.get(c, 0) + len(rows)
            if counts[c] == images_per_class:
                images = np.ascontiguousarray(np.concatenate(pending.pop(c)))
                save_npy(out / f"{c}.npy", images)
                done.add(c)
        del data, labels, classes

    short = [c for c in range(n_classes) if c not in done]
    if short:
        shown = ", ".join(f"{c} ({counts.get(c, 0)})" for c in short[:10])
        shown += " ..." if len(short) > 10 else ""
        raise ValueError(
            f"{len(short)} of {n_classes} classes have fewer than {images_per_class} "
            f"images in {src} (class index (images found): {shown}); lower "
            f"images_per_class or add the missing batches. The {len(done)} complete "
            f"classes were written to {out}."
        )
    split = (images_per_class - test_per_class, test_per_class)
    write_metadata(
        out,
        imagenet32_name(n_classes, split),
        *split,
        kind="imagenet32",
        source="Downsampled ImageNet 32x32 (Chrabaszcz et al. 2017), Imagenet32_train: "
        "the first images of each class in batch order",
    )


# --------------------------------------------------------------------------
# Tiny ImageNet (Stanford CS231n)
# --------------------------------------------------------------------------


class _Release:
    """Read-only view of the Tiny ImageNet release: a folder or a zip file.

    Paths are relative to the folder holding ``wnids.txt``.
    """

    def __init__(self, src: Path) -> None:
        self.src = src
        self._zip: zipfile.ZipFile | None = None
        if src.is_dir():
            for base in (src, src / "tiny-imagenet-200"):
                if (base / "wnids.txt").is_file():
                    self.base = base
                    return
            raise FileNotFoundError(
                f"no wnids.txt in {src} or {src / 'tiny-imagenet-200'}: {_TINY_RELEASE}"
            )
        if not src.is_file():
            raise FileNotFoundError(f"{src} does not exist: {_TINY_RELEASE}")
        try:
            self._zip = zipfile.ZipFile(src)
        except zipfile.BadZipFile as err:
            raise ValueError(
                f"{src}: not a folder or a zip file ({err}): {_TINY_RELEASE}"
            ) from None
        names = [n for n in self._zip.namelist() if not n.endswith("/")]
        found = sorted(
            (n for n in names if n.rsplit("/", 1)[-1] == "wnids.txt"), key=len
        )
        if not found:
            raise FileNotFoundError(
                f"no wnids.txt in the zip file {src}: {_TINY_RELEASE}"
            )
        self.prefix = found[0][: -len("wnids.txt")]
        self._listing: dict[str, list[str]] = {}
        for name in names:
            if name.startswith(self.prefix):
                folder, _, file = name[len(self.prefix) :].rpartition("/")
                self._listing.setdefault(folder, []).append(file)

    def where(self, rel: str) -> str:
        """``rel`` as a user would find it, for messages."""
        if self._zip is None:
            return str(self.base / rel)
        return f"{self.src}:{self.prefix}{rel}"

    def exists(self, rel: str) -> bool:
        if self._zip is None:
            return (self.base / rel).is_file()
        folder, _, file = rel.rpartition("/")
        return file in self._listing.get(folder, ())

    def files(self, folder: str) -> list[str]:
        """Names of the files directly in ``folder`` (sorted); [] if it is absent."""
        if self._zip is None:
            path = self.base / folder
            return (
                sorted(p.name for p in path.iterdir() if p.is_file())
                if path.is_dir()
                else []
            )
        return sorted(self._listing.get(folder, []))

    def read(self, rel: str) -> bytes:
        if not self.exists(rel):
            raise FileNotFoundError(f"{self.where(rel)} is missing: {_TINY_RELEASE}")
        if self._zip is None:
            return (self.base / rel).read_bytes()
        return self._zip.read(self.prefix + rel)

    def text(self, rel: str) -> list[str]:
        """Non-empty lines of a text file."""
        return [
            line for line in self.read(rel).decode("utf-8").splitlines() if line.strip()
        ]

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _decode_64(release: _Release, rel: str) -> np.ndarray:
    """One release image as uint8 (64, 64, 3) RGB (greyscale ones are converted)."""
    from PIL import Image, UnidentifiedImageError

    raw = release.read(rel)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.size != (64, 64):
                raise ValueError(
                    f"{release.where(rel)}: is {image.size[0]}x{image.size[1]} pixels, "
                    f"but Tiny ImageNet images are 64x64: {_TINY_RELEASE}"
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(
            f"{release.where(rel)}: cannot decode the image ({err})"
        ) from None


def _is_image(name: str) -> bool:
    return name.lower().endswith((".jpeg", ".jpg"))


def _val_by_class(release: _Release, wnids: set[str]) -> dict[str, list[str]]:
    """Validation image names of each wnid (sorted), from ``val_annotations.txt``."""
    annotations = "val/val_annotations.txt"
    if not release.exists(annotations):
        raise FileNotFoundError(
            f"{release.where(annotations)} is missing: {_TINY_RELEASE}"
        )
    labels: dict[str, str] = {}
    for k, line in enumerate(release.text(annotations), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in wnids:
            raise ValueError(
                f"{release.where(annotations)}: line {k} should be "
                "'file<TAB>wnid<TAB>box' "
                f"with a wnid from wnids.txt, got {line!r}"
            )
        labels[fields[0].strip()] = fields[1].strip()
    by_class: dict[str, list[str]] = {w: [] for w in wnids}
    for name in filter(_is_image, release.files("val/images")):
        if name not in labels:
            raise ValueError(
                f"{release.where('val/images/' + name)} has no line in "
                f"{release.where(annotations)}, so its class is unknown: "
                "a damaged release?"
            )
        by_class[labels[name]].append(name)
    return by_class


def _check_count(found: int, expected: int, what: str, where: str) -> None:
    if found != expected:
        raise ValueError(
            f"{where}: holds {found} {what} images, expected {expected} (Tiny ImageNet "
            "has 500 train and 50 validation images per class): a damaged or "
            "incomplete release? Unzip it again"
        )


def prepare_tinyimagenet(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    classes: int | None = None,
    train_per_class: int = 500,
    val_per_class: int = 50,
    progress: bool = True,
) -> None:
    """Convert the Tiny ImageNet release into 32x32 class files.

    Class ``c`` is the ``c``-th wnid in sorted order (torchvision ImageFolder's
    order).  ``out/<c>.npy`` is uint8 ``(train_per_class + val_per_class, 32,
    32, 3)``: the class's training images sorted by file name, then its
    validation images sorted by file name, each 64x64 image box-averaged to
    32x32 (:func:`box_downsample`, as Imagenet32 was made).  Also writes
    ``out/classes.tsv`` (``index, wnid, name`` with ``words.txt``'s names) and,
    last, ``out/lopbook.json``.

    Parameters
    ----------
    src : path-like
        ``tiny-imagenet-200.zip`` or its unzipped ``tiny-imagenet-200``
        folder (or the folder holding it).
    out : path-like
        Output folder (created).
    classes : int, optional
        Write only the first this many classes (default: all).
    train_per_class, val_per_class : int
        Images every class must have (the release: 500 and 50).
    progress : bool
        Show a progress bar over classes.

    Raises
    ------
    FileNotFoundError
        If ``src``, ``wnids.txt`` or ``val/val_annotations.txt`` is missing.
    ValueError
        If a class has the wrong number of images, an image is not 64x64 or
        cannot be decoded, a validation image has no annotation, or ``out``
        already holds class files beyond those to be written.
    """
    from tqdm.auto import tqdm

    src, out = Path(src).expanduser(), Path(out).expanduser()
    for value, what in (
        (train_per_class, "train_per_class"),
        (val_per_class, "val_per_class"),
    ):
        if check_index(value, what) < 1:
            raise ValueError(f"{what} must be >= 1")
    release = _Release(src)
    try:
        wnids = [line.strip() for line in release.text("wnids.txt")]
        if not wnids or len(set(wnids)) != len(wnids):
            raise ValueError(
                f"{release.where('wnids.txt')}: empty or has repeated wnids"
            )
        wnids = sorted(wnids)
        n_classes = len(wnids) if classes is None else check_index(classes, "classes")
        if not 1 <= n_classes <= len(wnids):
            raise ValueError(f"classes must lie in 1..{len(wnids)}, got {classes}")
        chosen = wnids[:n_classes]
        names = dict.fromkeys(wnids, "")
        if release.exists("words.txt"):
            for line in release.text("words.txt"):
                wnid, _, words = line.partition("\t")
                if wnid in names:
                    names[wnid] = words.strip()
        names = {w: n or w for w, n in names.items()}  # no words.txt line: the wnid
        val = _val_by_class(release, set(wnids))

        out.mkdir(parents=True, exist_ok=True)
        stale = sorted(
            int(p.stem)
            for p in out.glob("*.npy")
            if p.stem.isdigit() and int(p.stem) >= n_classes
        )
        if stale:
            raise ValueError(
                f"{out} already holds class files "
                f"{', '.join(f'{c}.npy' for c in stale[:5])}"
                f"{' ...' if len(stale) > 5 else ''} beyond the {n_classes} classes to "
                "write: choose an empty folder or delete them"
            )
        (out / METADATA_FILE).unlink(missing_ok=True)  # written again at the end

        bar = tqdm(
            chosen, desc="Tiny ImageNet classes", unit="class", disable=not progress
        )
        for c, wnid in enumerate(bar):
            folder = f"train/{wnid}/images"
            train = [f"{folder}/{n}" for n in release.files(folder) if _is_image(n)]
            _check_count(len(train), train_per_class, "training", release.where(folder))
            _check_count(
                len(val[wnid]),
                val_per_class,
                f"validation ({wnid})",
                release.where("val/val_annotations.txt"),
            )
            rels = train + [f"val/images/{n}" for n in val[wnid]]
            images = np.stack([_decode_64(release, rel) for rel in rels])
            save_npy(out / f"{c}.npy", box_downsample(images))
    finally:
        release.close()

    rows = [f"{c}\t{wnid}\t{names[wnid]}" for c, wnid in enumerate(chosen)]
    write_text(out / CLASSES_FILE, "index\twnid\tname\n" + "\n".join(rows) + "\n")
    write_metadata(
        out,
        tinyimagenet_name(n_classes),
        train_per_class,
        val_per_class,
        kind="tinyimagenet",
        source="Tiny ImageNet-200 (http://cs231n.stanford.edu/tiny-imagenet-200.zip): "
        "train images then val images per class, 64x64 box-averaged to 32x32",
    )
