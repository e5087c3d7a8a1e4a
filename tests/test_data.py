"""Tests for lopbook.data.

Every file is written here in the real on-disk format (IDX, .npy class files,
the official Imagenet32 pickles), so the loaders are exercised end to end
without network access or any shared data.  The real-MNIST test runs only
when ``LOPBOOK_DATA`` points at a directory holding the MNIST test split.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lopbook import data
from lopbook.data import locations
from lopbook.data import (
    BinaryTaskStream,
    CIFAR100Classes,
    Dataset,
    DatasetUnavailable,
    DataWarning,
    DigitClasses,
    ImageNet32,
    MNISTUnavailable,
    PermutedMNISTStream,
    class_images,
    data_root,
    load_digits_fallback,
    load_mnist,
    mnist_or_digits,
    prepare_imagenet32,
    read_idx,
)

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (big-endian), gzipped if the name ends with .gz."""
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path


def fake_mnist_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_mnist_split(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    suffix = ".gz" if gz else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user data directories, and an empty private download cache."""
    monkeypatch.delenv("LOPBOOK_DATA", raising=False)
    monkeypatch.delenv("LOPBOOK_IMAGENET", raising=False)
    monkeypatch.delenv("LOPBOOK_TINYIMAGENET", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def mnist_test_only(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A root in torchvision's layout holding a 30-image test split only."""
    root = tmp_path / "mnist"
    images, labels = fake_mnist_split(30, seed=1)
    write_mnist_split(root / "MNIST" / "raw", "t10k", images, labels)
    return root, images, labels


def imagenet_dir(path: Path, n_classes: int, channel_first: bool = False) -> Path:
    """Class files in which image i of class c has every pixel equal to (i + c) % 256."""
    path.mkdir(parents=True, exist_ok=True)
    for c in range(n_classes):
        values = ((np.arange(700) + c) % 256).astype(np.uint8)
        shape = (700, 3, 32, 32) if channel_first else (700, 32, 32, 3)
        np.save(path / f"{c}.npy", np.broadcast_to(values[:, None, None, None], shape).copy())
    return path


def small_digit_dataset(per_class: int, image_shape: tuple[int, int]) -> Dataset:
    """A structured (not random) digit-like data set: image k of digit c is c/9 everywhere with pixel k lit."""
    d = image_shape[0] * image_shape[1]
    y = np.tile(np.arange(10), per_class)
    x = np.repeat((y / 9.0)[:, None], d, axis=1).astype(np.float32)
    x[np.arange(len(y)), np.arange(len(y)) % d] = 1.0
    return Dataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), "test digits", image_shape)


# --------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_images_and_labels(tmp_path: Path, suffix: str) -> None:
    images, labels = fake_mnist_split(5, seed=0)
    got_images = read_idx(write_idx(tmp_path / f"img{suffix}", images))
    got_labels = read_idx(write_idx(tmp_path / f"lab{suffix}", labels))
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_other_types_are_big_endian(tmp_path: Path, dtype: type) -> None:
    array: np.ndarray = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a.idx", array))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_read_idx_rejects_malformed_files(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "good", np.zeros((2, 3), np.uint8)).read_bytes()
    cases = {
        "bad_magic": b"\x01\x02" + good[2:],
        "bad_type": good[:2] + b"\x07" + good[3:],
        "truncated": good[:-1],
        "too_long": good + b"\x00",
        "short_header": good[:6],
        "empty": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not an IDX file") as info:
            read_idx(tmp_path / name)
        assert name in str(info.value)
    (tmp_path / "broken.gz").write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match="broken.gz: not an IDX file"):
        read_idx(tmp_path / "broken.gz")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


# --------------------------------------------------------------------------
# load_mnist / mnist_or_digits
# --------------------------------------------------------------------------


def test_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert data_root() is None
    monkeypatch.setenv("LOPBOOK_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"


def test_load_mnist_test_split(mnist_test_only: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, labels = mnist_test_only
    ds = load_mnist(root, split="test", download=False)
    assert ds.x.dtype == torch.float32 and ds.x.shape == (30, 784)
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == labels.tolist()
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    torch.testing.assert_close(ds.x, torch.from_numpy(images.reshape(30, 784) / 255.0).float())
    assert ds.image_shape == (28, 28) and ds.n_features == 784 and ds.n_classes == 10 and len(ds) == 30
    assert ds.name == "MNIST test split (30 images)" and ds.warning is None


def test_load_mnist_missing_split(mnist_test_only: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = mnist_test_only
    with pytest.raises(MNISTUnavailable, match="train split not found") as info:
        load_mnist(root, split="train", download=False)
    assert "download=False" in str(info.value) and isinstance(info.value, RuntimeError)


def test_load_mnist_auto_and_all(mnist_test_only: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = mnist_test_only
    assert load_mnist(root, split="auto", download=False).name.startswith("MNIST test split")
    # add an uncompressed training split directly in root/ (a supported location)
    train_images, train_labels = fake_mnist_split(40, seed=2)
    write_mnist_split(root, "train", train_images, train_labels, gz=False)
    auto = load_mnist(root, split="auto", download=False)
    assert auto.name == "MNIST train split (40 images)"
    np.testing.assert_array_equal(auto.y.numpy(), train_labels)
    both = load_mnist(root, split="all", download=False)
    assert len(both) == 70 and both.name == "MNIST train+test splits (70 images)"
    with pytest.raises(ValueError, match="split must be one of"):
        load_mnist(root, split="validation", download=False)


def test_load_mnist_from_env_and_raw_subdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    images, labels = fake_mnist_split(10, seed=3)
    write_mnist_split(tmp_path / "d" / "raw", "t10k", images, labels, gz=False)
    monkeypatch.setenv("LOPBOOK_DATA", str(tmp_path / "d"))
    assert len(load_mnist(download=False)) == 10


@pytest.mark.parametrize("via_env", [False, True])
def test_load_mnist_nonexistent_root_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, via_env: bool
) -> None:
    missing = tmp_path / "nowhere"
    if via_env:
        monkeypatch.setenv("LOPBOOK_DATA", str(missing))
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(None if via_env else missing, download=True)
    message = str(info.value)
    assert str(missing) in message and "LOPBOOK_DATA" in message
    assert "t10k-images-idx3-ubyte" in message and "MNIST/raw" in message
    assert "torchvision.datasets.MNIST(ROOT, download=True)" in message
    with pytest.raises(FileNotFoundError):  # a mistake, not a reason to fall back
        mnist_or_digits(None if via_env else missing, download=False)


def test_load_mnist_rejects_inconsistent_files(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    images, labels = fake_mnist_split(10, seed=4)
    write_mnist_split(raw, "t10k", images, labels[:9])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: holds 9 labels"):
        load_mnist(tmp_path, split="test", download=False)
    labels[3] = 12
    write_mnist_split(raw, "t10k", images, labels)
    with pytest.raises(ValueError, match="labels must be digits 0..9"):
        load_mnist(tmp_path, split="test", download=False)
    write_mnist_split(raw, "t10k", images[:, :27], labels % 10)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: expected MNIST images"):
        load_mnist(tmp_path, split="test", download=False)


def test_download_fails_fast_when_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket
    import time

    def hang(*args: object, **kwargs: object) -> None:
        time.sleep(1.0)
        raise OSError("timed out")

    # the connectivity probe has a hard deadline even if DNS or connect hangs
    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    assert not locations.reachable(["https://example.org/x"], timeout=0.2)
    assert time.perf_counter() - start < 2.0
    # and load_mnist(download=True) turns an unreachable server into MNISTUnavailable
    monkeypatch.setattr(locations, "reachable", lambda urls, timeout=0.0: False)
    with pytest.raises(MNISTUnavailable, match="unreachable|no download server"):
        load_mnist(tmp_path, split="train", download=True)
    with pytest.warns(DataWarning, match="download servers are unreachable"):
        assert len(mnist_or_digits(tmp_path, download=True)) == 1797


def test_mnist_or_digits_falls_back_loudly() -> None:
    with pytest.warns(DataWarning, match="falling back to scikit-learn's 8x8 digits") as record:
        ds = mnist_or_digits(download=False)
    assert "NOT MNIST" in str(record[0].message)
    assert ds.warning == str(record[0].message)
    assert len(ds) == 1797 and ds.n_features == 64 and ds.image_shape == (8, 8)
    assert "FALLBACK" in ds.name and "not MNIST" in ds.name
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.testing.assert_allclose(ds.x.numpy() * 16.0, digits.data, atol=1e-5)
    np.testing.assert_array_equal(ds.y.numpy(), digits.target)


def test_load_digits_fallback_directly() -> None:
    ds = load_digits_fallback()
    assert ds.x.dtype == torch.float32 and float(ds.x.max()) == 1.0 and float(ds.x.min()) == 0.0
    assert ds.warning and "not MNIST" in ds.warning.replace("NOT", "not")
    assert np.bincount(ds.y.numpy()).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


MNIST_TEST_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


# read at import, before the autouse fixture clears it
REAL_MNIST = os.environ.get("LOPBOOK_DATA", "")


@pytest.mark.skipif(not REAL_MNIST, reason="LOPBOOK_DATA is not set (no real MNIST here)")
def test_real_mnist_test_split() -> None:
    root = Path(REAL_MNIST)
    found = [p for d in (root / "MNIST" / "raw", root, root / "raw") for p in d.glob("t10k-labels-idx1-ubyte*")]
    if not found:
        pytest.skip(f"no MNIST test split under LOPBOOK_DATA={root}")
    ds = load_mnist(root, split="test", download=False)
    assert len(ds) == 10_000 and ds.name == "MNIST test split (10,000 images)"
    assert ds.y[0].item() == 7 and ds.y[:5].tolist() == [7, 2, 1, 0, 4]
    counts = np.bincount(ds.y.numpy(), minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert counts.sum() == 10_000
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    for name, md5 in MNIST_TEST_MD5.items():
        path = root / "MNIST" / "raw" / name
        if path.is_file():
            assert hashlib.md5(path.read_bytes()).hexdigest() == md5


# --------------------------------------------------------------------------
# PermutedMNISTStream
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits_fallback()


def test_permutations_are_true_permutations(digits: Dataset) -> None:
    stream = PermutedMNISTStream(digits, seed=0, examples_per_task=100)
    for task in range(5):
        perm = stream.permutation(task)
        assert perm.dtype == torch.int64 and perm.shape == (64,)
        assert sorted(perm.tolist()) == list(range(64))


def test_stream_is_a_function_of_seed_and_task(digits: Dataset) -> None:
    a = PermutedMNISTStream(digits, seed=3, examples_per_task=500)
    b = PermutedMNISTStream(digits, seed=3, examples_per_task=500)
    other = PermutedMNISTStream(digits, seed=4, examples_per_task=500)
    # call order must not matter: no state is carried between calls
    later_first = a.permutation(7)
    assert torch.equal(b.permutation(0), a.permutation(0))
    assert torch.equal(later_first, b.permutation(7))
    assert torch.equal(a.order(2), b.order(2))
    assert not torch.equal(a.permutation(0), other.permutation(0))
    assert not torch.equal(a.order(0), other.order(0))
    assert not torch.equal(a.permutation(0), a.permutation(1))
    assert not torch.equal(a.order(0), a.order(1))
    # permutation first, then order, from SeedSequence([seed, task])
    rng = np.random.default_rng(np.random.SeedSequence([3, 5]))
    assert a.permutation(5).tolist() == rng.permutation(64).tolist()
    assert a.order(5).tolist() == rng.permutation(1797)[:500].tolist()


def test_task_applies_order_and_permutation(digits: Dataset) -> None:
    stream = PermutedMNISTStream(digits, seed=1, examples_per_task=300)
    x, y = stream.task(4)
    perm, order = stream.permutation(4), stream.order(4)
    assert x.shape == (300, 64) and x.dtype == torch.float32 and y.shape == (300,)
    assert torch.equal(x, digits.x[order][:, perm])
    assert torch.equal(y, digits.y[order])
    # un-permuting the columns recovers the original images
    assert torch.equal(x[:, torch.argsort(perm)], digits.x[order])
    assert torch.equal(stream.probe(4, 10), x[:10])
    assert stream.probe(4, 10_000).shape == (300, 64)


def test_more_examples_than_data_makes_several_shuffled_passes() -> None:
    ds = small_digit_dataset(per_class=1, image_shape=(4, 4))  # N = 10
    stream = PermutedMNISTStream(ds, seed=0, examples_per_task=35)
    order = stream.order(2).numpy()
    assert order.shape == (35,)
    for start in (0, 10, 20):
        assert sorted(order[start : start + 10].tolist()) == list(range(10))
    assert len(set(order[30:].tolist())) == 5
    assert not np.array_equal(order[:10], order[10:20])
    assert stream.task(2)[0].shape == (35, 16)


def test_stream_rejects_bad_arguments(digits: Dataset) -> None:
    with pytest.raises(ValueError, match="examples_per_task"):
        PermutedMNISTStream(digits, seed=0, examples_per_task=0)
    with pytest.raises(ValueError, match="seed"):
        PermutedMNISTStream(digits, seed=-1, examples_per_task=5)
    with pytest.raises(ValueError, match="task"):
        PermutedMNISTStream(digits, seed=0, examples_per_task=5).task(-1)


# --------------------------------------------------------------------------
# ImageNet32 and BinaryTaskStream
# --------------------------------------------------------------------------


@pytest.mark.parametrize("channel_first", [False, True])
def test_imagenet32_reads_class_files(tmp_path: Path, channel_first: bool) -> None:
    source = ImageNet32(imagenet_dir(tmp_path / "in32", 4, channel_first))
    assert source.n_classes == 4 and source.warning is None
    assert (source.train_per_class, source.test_per_class) == (600, 100)
    images = source.images(2)
    assert images.shape == (700, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:, 1, 5, 7], (np.arange(700) + 2) % 256)
    with pytest.raises(IndexError):
        source.images(4)


def test_imagenet32_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prepare-imagenet32") as info:
        ImageNet32(tmp_path / "missing")
    assert "shibhansh/loss-of-plasticity" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class files"):
        ImageNet32(tmp_path / "empty")
    gap = imagenet_dir(tmp_path / "gap", 3)
    (gap / "1.npy").rename(gap / "01.npy")  # not an accepted name
    with pytest.raises(ValueError, match="missing 1.npy"):
        ImageNet32(gap)
    bad = imagenet_dir(tmp_path / "bad", 2)
    np.save(bad / "1.npy", np.zeros((700, 32, 32), np.uint8))
    source = ImageNet32(bad)  # lazy: the bad file is only read when asked for
    source.images(0)
    with pytest.raises(ValueError, match=r"1\.npy: expected shape"):
        source.images(1)
    np.save(bad / "1.npy", np.zeros((700, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"1\.npy: expected uint8"):
        ImageNet32(bad).images(1)


def test_binary_tasks_follow_the_class_order(tmp_path: Path) -> None:
    source = ImageNet32(imagenet_dir(tmp_path / "in32", 4))
    stream = BinaryTaskStream(source, seed=0)
    order = stream.class_order()
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert np.array_equal(order, BinaryTaskStream(source, seed=0).class_order())
    orders = {tuple(BinaryTaskStream(source, seed=s).class_order()) for s in range(10)}
    assert len(orders) > 1
    assert stream.classes(0) == (order[0], order[1]) and stream.classes(1) == (order[2], order[3])
    assert stream.classes(2) == stream.classes(0) and stream.classes(5) == stream.classes(1)

    x_train, y_train, x_test, y_test = stream.task(1)
    a, b = stream.classes(1)
    assert x_train.shape == (1200, 3, 32, 32) and x_test.shape == (200, 3, 32, 32)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert y_train.tolist() == [0] * 600 + [1] * 600 and y_test.tolist() == [0] * 100 + [1] * 100
    assert float(x_train.min()) >= 0.0 and float(x_train.max()) <= 1.0
    # pixel value of image i of class c is (i + c) % 256: train = images 0..599, test =
    # 600..699
    pixel = lambda x: torch.round(x[:, 0, 0, 0] * 255).long().numpy()  # noqa: E731
    np.testing.assert_array_equal(pixel(x_train[:600]), (np.arange(600) + a) % 256)
    np.testing.assert_array_equal(pixel(x_train[600:]), (np.arange(600) + b) % 256)
    np.testing.assert_array_equal(pixel(x_test[:100]), (np.arange(600, 700) + a) % 256)
    np.testing.assert_array_equal(pixel(x_test[100:]), (np.arange(600, 700) + b) % 256)


def test_binary_tasks_with_odd_class_count(tmp_path: Path) -> None:
    source = ImageNet32(imagenet_dir(tmp_path / "in32", 5))
    stream = BinaryTaskStream(source, seed=1)
    order = stream.class_order()
    pairs = [stream.classes(t) for t in range(6)]
    assert pairs[:2] == [(order[0], order[1]), (order[2], order[3])]
    assert pairs[2:4] == pairs[:2] and stream.n_pairs == 2


# --------------------------------------------------------------------------
# prepare_imagenet32
# --------------------------------------------------------------------------


def write_official_batches(src: Path, n_classes: int = 3, per_class: int = 10) -> dict[int, list[np.ndarray]]:
    """Two batches in the official pickle format; returns the expected HWC images per class, in order."""
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(1, n_classes + 1), per_class))
    rows = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    half = len(labels) // 2
    for k, part in enumerate((slice(0, half), slice(half, None)), start=1):
        batch = {"data": rows[part], "labels": labels[part].tolist(), "mean": rows.mean(0)}
        with open(src / f"train_data_batch_{k}", "wb") as handle:
            pickle.dump(batch, handle)
    expected: dict[int, list[np.ndarray]] = {c: [] for c in range(n_classes)}
    for row, label in zip(rows, labels, strict=True):
        r, g, b = row[:1024].reshape(32, 32), row[1024:2048].reshape(32, 32), row[2048:].reshape(32, 32)
        expected[int(label) - 1].append(np.stack([r, g, b], axis=-1))
    return expected


def test_prepare_imagenet32_converts_official_batches(tmp_path: Path) -> None:
    expected = write_official_batches(tmp_path / "src")
    prepare_imagenet32(tmp_path / "src", tmp_path / "out", images_per_class=7)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["0.npy", "1.npy", "2.npy", "lopbook.json"]
    # the split is declared: 7 = 6 + 1 (7 // 7 test)
    source = ImageNet32(tmp_path / "out")
    assert (source.train_per_class, source.test_per_class) == (6, 1)
    assert source.name == "ImageNet 32x32 (3 classes, 6 + 1 per class)"
    for c in range(3):
        array = np.load(tmp_path / "out" / f"{c}.npy")
        assert array.shape == (7, 32, 32, 3) and array.dtype == np.uint8
        np.testing.assert_array_equal(array, np.stack(expected[c][:7]))


def test_prepare_imagenet32_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_data_batch_1"):
        prepare_imagenet32(tmp_path / "absent", tmp_path / "out")
    write_official_batches(tmp_path / "src")
    with pytest.raises(ValueError, match="fewer than 11 images"):
        prepare_imagenet32(tmp_path / "src", tmp_path / "out", images_per_class=11)


def test_prepare_imagenet32_cli(tmp_path: Path) -> None:
    write_official_batches(tmp_path / "src", n_classes=2, per_class=4)
    argv = ["prepare-imagenet32", str(tmp_path / "src"), str(tmp_path / "out"), "--images-per-class", "3"]
    assert data.main(argv) == 0
    assert np.load(tmp_path / "out" / "1.npy").shape == (3, 32, 32, 3)
    result = subprocess.run(
        [sys.executable, "-m", "lopbook.data", "prepare-imagenet32", str(tmp_path / "nope"), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert result.returncode == 1 and "train_data_batch_1" in result.stderr


# --------------------------------------------------------------------------
# DigitClasses, CIFAR-100 and class_images
# --------------------------------------------------------------------------


def test_digit_classes_from_28x28() -> None:
    ds = small_digit_dataset(per_class=12, image_shape=(28, 28))
    source = DigitClasses(ds, train_per_class=8, test_per_class=4)
    assert source.n_classes == 10 and "not ImageNet" in source.name and "NOT" in (source.warning or "")
    images = source.images(3)
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.uint8
    # 2 px zero padding
    assert np.all(images[:, :, :2, :] == 0) and np.all(images[:, :, :, -2:] == 0)
    expected = np.rint(ds.x[ds.y == 3].numpy().reshape(-1, 28, 28) * 255).astype(np.uint8)
    # first images of the class, in order
    np.testing.assert_array_equal(images[:, 0, 2:30, 2:30], expected)
    assert np.array_equal(images[:, 0], images[:, 2])  # grey replicated to RGB
    with pytest.raises(ValueError, match="fewer than 13 images"):
        DigitClasses(ds, train_per_class=9, test_per_class=4)
    with pytest.raises(ValueError, match="fewer than 700"):
        DigitClasses(ds)  # MNIST defaults: 600 + 100


def test_digit_classes_from_sklearn_digits(digits: Dataset) -> None:
    source = DigitClasses(digits)
    assert (source.train_per_class, source.test_per_class) == (150, 24)
    assert "8x8" in source.name and source.warning and "not MNIST" in source.warning.replace("NOT", "not")
    images = source.images(8)
    assert images.shape == (174, 3, 32, 32)
    original = np.rint(digits.x[digits.y == 8].numpy().reshape(-1, 8, 8) * 255).astype(np.uint8)
    # 4x nearest-neighbour upsampling
    np.testing.assert_array_equal(images[:, 1, ::4, ::4], original)
    np.testing.assert_array_equal(images[:, 1, 3::4, 3::4], original)
    x_train, y_train, x_test, _ = BinaryTaskStream(source, seed=0).task(0)
    assert x_train.shape == (300, 3, 32, 32) and x_test.shape == (48, 3, 32, 32)


def test_cifar100_offline_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="download=False"):
        CIFAR100Classes(tmp_path / "empty", download=False)


def test_class_images_kinds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'auto', 'imagenet', 'cifar100', 'digits'"):
        class_images("nope")
    with pytest.raises(FileNotFoundError, match="LOPBOOK_IMAGENET"):
        class_images("imagenet")
    root = imagenet_dir(tmp_path / "in32", 2)
    assert isinstance(class_images("imagenet", root=root), ImageNet32)
    monkeypatch.setenv("LOPBOOK_IMAGENET", str(root))
    assert class_images("auto").n_classes == 2


def test_class_images_auto_falls_back_to_digits() -> None:
    with pytest.warns(DataWarning) as record:
        source = class_images("auto", download=False)
    assert isinstance(source, DigitClasses) and source.train_per_class == 150
    messages = " ".join(str(w.message) for w in record)
    assert "NOT Continual ImageNet" in messages and "prepare-imagenet32" in messages


def test_random_pairing_gives_fresh_pairs_reproducibly(tmp_path):
    """pairing="random": every task a random pair of distinct classes, reproducible from
    (seed, task), covering
    many more pairs than the class order's n_classes // 2."""
    from lopbook.data import BinaryTaskStream

    class Source:
        n_classes, name = 10, "ten classes"
    stream = BinaryTaskStream(Source(), seed=3, pairing="random")
    pairs = [stream.classes(t) for t in range(200)]
    assert all(a != b and 0 <= a < 10 and 0 <= b < 10 for a, b in pairs)
    # of 45 possible pairs; the order has 5
    assert len({frozenset(p) for p in pairs}) > 30
    assert pairs == [BinaryTaskStream(Source(), seed=3, pairing="random").classes(t) for t in range(200)]
    assert pairs != [BinaryTaskStream(Source(), seed=4, pairing="random").classes(t) for t in range(200)]
    ordered = BinaryTaskStream(Source(), seed=3)
    assert len({ordered.classes(t) for t in range(200)}) == 5
    with pytest.raises(ValueError, match="pairing"):
        BinaryTaskStream(Source(), seed=3, pairing="shuffled")
