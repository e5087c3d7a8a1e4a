"""Dataset identities: equal for equal data (in any process), different otherwise.

Run keys include these strings, so a result is never reused for other data.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lopbook.data import ClassFolder, Dataset, DigitClasses, load_digits_fallback, load_mnist

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LOPBOOK_DATA", "LOPBOOK_IMAGENET", "LOPBOOK_TINYIMAGENET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write_idx(path: Path, array: np.ndarray) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + array.tobytes()))


def mnist_root(root: Path, images: np.ndarray, splits=("train", "t10k")) -> Path:
    labels = (np.arange(len(images)) % 10).astype(np.uint8)
    for prefix in splits:
        write_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def fresh_process(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def class_folder(path: Path, n_classes: int = 4, per_class: int = 700) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        images = rng.integers(0, 256, (per_class, 32, 32, 3), dtype=np.uint8)
        np.save(path / f"{c}.npy", images)
    return path


# --------------------------------------------------------------------------
# Dataset (MNIST, 8x8 digits)
# --------------------------------------------------------------------------


def test_dataset_identity_format_and_pinned_value() -> None:
    x = torch.arange(20, dtype=torch.float32).reshape(5, 4) / 20
    y = torch.tensor([0, 1, 2, 3, 9])
    ds = Dataset(x, y, "five images", (2, 2), kind="tiny")
    # pinned: a change of the hashing scheme must be deliberate (it changes run keys)
    assert ds.identity == "tiny-5-06403bb753be"
    same = Dataset(x.clone(), y.clone(), "another name", (2, 2), kind="tiny")
    assert same.identity == ds.identity  # the name is a label, not data
    assert Dataset(x, y, "reshaped", (4, 1), kind="tiny").identity != ds.identity
    changed = x.clone()
    changed[3, 1] += 1 / 255
    assert Dataset(changed, y, "n", (2, 2), kind="tiny").identity != ds.identity
    relabelled = y.clone()
    relabelled[0] = 5
    assert Dataset(x, relabelled, "n", (2, 2), kind="tiny").identity != ds.identity
    assert Dataset(x, y, "n", (2, 2), kind="other").identity.startswith("other-5-")


def test_mnist_identity(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    root = mnist_root(tmp_path / "a", images)
    train = load_mnist(root, split="train", download=False)
    test = load_mnist(root, split="test", download=False)
    assert train.identity.startswith("mnist-train-30-")
    assert test.identity.startswith("mnist-test-30-")
    assert train.identity != test.identity  # same bytes here, different splits
    both = load_mnist(root, split="all", download=False)
    assert both.identity.startswith("mnist-train+test-60-")
    # a fresh load, a copy elsewhere, and a fresh process agree
    assert load_mnist(root, split="train", download=False).identity == train.identity
    copy = mnist_root(tmp_path / "b", images, splits=("train",))
    assert load_mnist(copy, split="train", download=False).identity == train.identity
    code = (
        "from lopbook.data import load_mnist;"
        f"print(load_mnist({str(root)!r}, split='train', download=False).identity)"
    )
    assert fresh_process(code) == train.identity
    # one changed pixel
    images[17, 3, 4] ^= 1
    other = mnist_root(tmp_path / "c", images, splits=("train",))
    assert load_mnist(other, split="train", download=False).identity != train.identity


def test_digits_identity_is_stable() -> None:
    digits = load_digits_fallback()
    assert digits.identity.startswith("digits8x8-1797-")
    code = "from lopbook.data import load_digits_fallback; print(load_digits_fallback().identity)"
    assert fresh_process(code) == digits.identity


# --------------------------------------------------------------------------
# class sources
# --------------------------------------------------------------------------


def test_class_folder_identity(tmp_path: Path) -> None:
    folder = class_folder(tmp_path / "a")
    identity = ClassFolder(folder).identity
    assert identity.startswith("imagenet32-4c-600+100-") and len(identity.split("-")[-1]) == 12
    assert ClassFolder(folder).identity == identity
    copy = shutil.copytree(folder, tmp_path / "elsewhere")  # the path is not part of it
    assert ClassFolder(copy).identity == identity
    code = f"from lopbook.data import ClassFolder; print(ClassFolder({str(copy)!r}).identity)"
    assert fresh_process(code) == identity

    def changed(c: int) -> str:
        target = shutil.copytree(folder, tmp_path / f"changed{c}")
        array = np.load(target / f"{c}.npy")
        array[650, 1, 2, 0] ^= 1  # one pixel of one test image
        np.save(target / f"{c}.npy", array)
        return ClassFolder(target).identity

    assert changed(0) != identity and changed(3) != identity  # first and last: hashed
    assert changed(2) != identity  # the middle one too

    split = shutil.copytree(folder, tmp_path / "split")
    meta = {"name": "ImageNet 32x32 (4 classes)", "train_per_class": 650, "test_per_class": 50}
    (split / "lopbook.json").write_text(json.dumps(meta))
    resplit = ClassFolder(split).identity
    assert resplit.startswith("classfolder-4c-650+50-") and resplit != identity
    meta["train_per_class"], meta["test_per_class"] = 600, 100
    (split / "lopbook.json").write_text(json.dumps(meta))  # same split, but declared
    assert ClassFolder(split).identity not in (identity, resplit)

    more = shutil.copytree(folder, tmp_path / "more")
    np.save(more / "4.npy", np.load(folder / "1.npy"))
    assert ClassFolder(more).identity.startswith("imagenet32-5c-")
    assert ClassFolder(more).identity.split("-")[-1] != identity.split("-")[-1]

    smaller = shutil.copytree(folder, tmp_path / "smaller")
    np.save(smaller / "1.npy", np.load(folder / "1.npy")[:699])  # size differs
    assert ClassFolder(smaller).identity != identity


def test_class_folder_identity_covers_class_names(tmp_path: Path) -> None:
    folder = class_folder(tmp_path / "tiny", n_classes=2, per_class=550)
    (folder / "classes.tsv").write_text("index\twnid\tname\n0\tn1\tgoldfish\n1\tn2\tcat\n")
    identity = ClassFolder(folder).identity
    assert identity.startswith("tinyimagenet-2c-500+50-")
    (folder / "classes.tsv").write_text("index\twnid\tname\n0\tn2\tcat\n1\tn1\tgoldfish\n")
    assert ClassFolder(folder).identity != identity


def test_digit_classes_identity() -> None:
    digits = load_digits_fallback()
    source = DigitClasses(digits)
    identity = source.identity
    assert identity.startswith("digits-digits8x8-10c-150+24-")
    assert DigitClasses(digits).identity == identity
    assert DigitClasses(digits, train_per_class=140, test_per_class=34).identity != identity
    assert DigitClasses(digits, train_per_class=100, test_per_class=24).identity != identity


REAL_MNIST = Path("/work/shared/data/mnist")


@pytest.mark.skipif(
    not (REAL_MNIST / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="no shared MNIST",
)
def test_real_mnist_identity(tmp_path: Path) -> None:
    test = load_mnist(REAL_MNIST, split="test", download=False)
    # pinned for the original files (md5 9fb629c4... / ec29112d...): any machine agrees
    assert test.identity == "mnist-test-10000-ad17d94e9bc9"
    # the gzipped originals alone decode to the same data, hence the same identity
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:
        shutil.copy(REAL_MNIST / "MNIST" / "raw" / name, raw / name)
    assert load_mnist(tmp_path, split="test", download=False).identity == test.identity
    if (REAL_MNIST / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz").is_file():
        train = load_mnist(REAL_MNIST, split="train", download=False)
        assert train.identity == "mnist-train-60000-a5f9eafcbb44"
