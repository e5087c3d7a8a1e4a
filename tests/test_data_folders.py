"""Class folders (ClassFolder / ImageNet32) with any split, class names, and class_images.

Folders are written here in the real format: ``<c>.npy`` uint8 class files,
``lopbook.json`` and ``classes.tsv``.  One test reads real Tiny ImageNet class
files made by the shared data folder's ``to_class_files.py`` (skipped when that
folder is absent).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from lopbook.data import (
    BinaryTaskStream,
    ClassFolder,
    DataWarning,
    ImageNet32,
    class_images,
    short_class_name,
)

TINY_SHARED = Path("/work/shared/data/tiny-imagenet-200-32x32")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LOPBOOK_DATA", "LOPBOOK_IMAGENET", "LOPBOOK_TINYIMAGENET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def class_folder(
    path: Path,
    n_classes: int,
    per_class: int,
    meta: dict | None = None,
    names: list[str] | None = None,
) -> Path:
    """Class files where every pixel of image i of class c is (i + 7 c) % 256."""
    path.mkdir(parents=True, exist_ok=True)
    for c in range(n_classes):
        values = ((np.arange(per_class) + 7 * c) % 256).astype(np.uint8)
        array = np.broadcast_to(values[:, None, None, None], (per_class, 32, 32, 3))
        np.save(path / f"{c}.npy", array.copy())
    if meta is not None:
        (path / "lopbook.json").write_text(json.dumps(meta))
    if names is not None:
        rows = [f"{c}\tn{c:08d}\t{name}" for c, name in enumerate(names)]
        (path / "classes.tsv").write_text("index\twnid\tname\n" + "\n".join(rows) + "\n")
    return path


def test_metadata_declares_split_and_name(tmp_path: Path) -> None:
    meta = {"name": "my eight-image classes", "train_per_class": 5, "test_per_class": 3}
    source = ClassFolder(class_folder(tmp_path / "f", 4, 8, meta))
    assert (source.train_per_class, source.test_per_class) == (5, 3)
    assert source.name == "my eight-image classes" and source.warning is None
    assert source.kind == "classfolder" and source.class_names is None
    assert source.images(3).shape == (8, 3, 32, 32)
    stream = BinaryTaskStream(source, seed=0)
    x_train, y_train, x_test, y_test = stream.task(0)
    a, b = stream.classes(0)
    assert x_train.shape == (10, 3, 32, 32) and x_test.shape == (6, 3, 32, 32)
    assert y_train.tolist() == [0] * 5 + [1] * 5 and y_test.tolist() == [0] * 3 + [1] * 3
    pixels = np.rint(x_test[:, 0, 0, 0].numpy() * 255).astype(int)
    assert pixels.tolist() == [(i + 7 * c) % 256 for c in (a, b) for i in range(5, 8)]
    # a kind in the metadata is kept; a name is optional
    meta = {"kind": "mine", "train_per_class": 6, "test_per_class": 2}
    other = ClassFolder(class_folder(tmp_path / "g", 2, 8, meta))
    assert other.kind == "mine" and other.name == "class folder g (2 classes)"


def test_700_images_is_the_imagenet32_layout(tmp_path: Path) -> None:
    source = ImageNet32(class_folder(tmp_path / "in32", 3, 700))
    assert (source.train_per_class, source.test_per_class) == (600, 100)
    assert source.name == "ImageNet 32x32 (3 classes)" and source.kind == "imagenet32"
    assert source.warning is None and source.class_names is None
    assert ImageNet32 is ClassFolder


def test_550_images_with_classes_tsv_is_tiny_imagenet(tmp_path: Path) -> None:
    names = ["goldfish, Carassius auratus", "teapot", "tabby, tabby cat"]
    source = ClassFolder(class_folder(tmp_path / "tiny", 3, 550, names=names))
    assert (source.train_per_class, source.test_per_class) == (500, 50)
    assert source.kind == "tinyimagenet" and source.warning is None
    assert source.name.startswith("Tiny ImageNet 32x32 (3 classes, real ImageNet photographs")
    assert "stand-in for Imagenet32" in source.name
    assert source.class_names == names
    assert source.class_ids == ["n00000000", "n00000001", "n00000002"]
    assert [short_class_name(n) for n in names] == ["goldfish", "teapot", "tabby"]
    x_train, _, x_test, _ = BinaryTaskStream(source, seed=2).task(0)
    assert x_train.shape == (1000, 3, 32, 32) and x_test.shape == (100, 3, 32, 32)


def test_unknown_size_without_metadata_asks_for_lopbook_json(tmp_path: Path) -> None:
    for folder, names in [(tmp_path / "a", None), (tmp_path / "b", ["x", "y"])]:
        class_folder(folder, 2, 600 if names is None else 551, names=names)
        with pytest.raises(ValueError, match="cannot tell the train/test split") as info:
            ClassFolder(folder)
        message = str(info.value)
        assert str(folder / "lopbook.json") in message and '"train_per_class": 500' in message
    # 550 images without classes.tsv are not assumed to be Tiny ImageNet
    with pytest.raises(ValueError, match="0.npy holds 550 images"):
        ClassFolder(class_folder(tmp_path / "c", 2, 550))


def test_malformed_folders_name_the_file(tmp_path: Path) -> None:
    meta = {"name": "m", "train_per_class": 500, "test_per_class": 50}
    mixed = class_folder(tmp_path / "mixed", 3, 550, meta)
    np.save(mixed / "2.npy", np.zeros((700, 32, 32, 3), np.uint8))
    source = ClassFolder(mixed)
    source.images(1)
    with pytest.raises(ValueError, match=r"2\.npy: expected shape \(550, 32, 32, 3\)") as info:
        source.images(2)
    assert "Every class file here must hold 550 images" in str(info.value)
    assert "lopbook.json" in str(info.value)

    np.save(mixed / "2.npy", np.zeros((550, 32, 32, 3), np.int16))
    with pytest.raises(ValueError, match=r"2\.npy: expected uint8"):
        ClassFolder(mixed).images(2)
    (mixed / "2.npy").write_bytes(b"no npy")
    with pytest.raises(ValueError, match=r"2\.npy: not a plain \.npy array"):
        ClassFolder(mixed).images(2)
    (mixed / "2.npy").unlink()
    (mixed / "3.npy").write_bytes((mixed / "1.npy").read_bytes())
    with pytest.raises(ValueError, match="missing 2.npy"):
        ClassFolder(mixed)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[500, 50]", "expected a JSON object"),
        ('{"name": "x", "test_per_class": 50}', "train_per_class must be a positive"),
        ('{"train_per_class": 500, "test_per_class": 0}', "test_per_class must be a pos"),
        ('{"train_per_class": true, "test_per_class": 50}', "train_per_class must be"),
        ('{"train_per_class": 5.0, "test_per_class": 50}', "train_per_class must be"),
        ('{"name": "", "train_per_class": 5, "test_per_class": 5}', "'name' must be"),
    ],
)
def test_malformed_metadata(tmp_path: Path, content: str, match: str) -> None:
    folder = class_folder(tmp_path / "f", 2, 700)
    (folder / "lopbook.json").write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        ClassFolder(folder)
    assert "lopbook.json" in str(info.value)


def test_malformed_classes_tsv(tmp_path: Path) -> None:
    folder = class_folder(tmp_path / "f", 3, 700, names=["a", "b"])
    with pytest.raises(ValueError, match="classes.tsv: names 2 classes but .* 3 class"):
        ClassFolder(folder)
    (folder / "classes.tsv").write_text("index\twnid\tname\n0\tn0\ta\n2\tn2\tc\n1\tn1\tb\n")
    with pytest.raises(ValueError, match=r"classes.tsv: line 3 should be '1<TAB>"):
        ClassFolder(folder)
    (folder / "classes.tsv").write_text("index\twnid\tname\n0\ta\n1\tb\n2\tc\n")
    with pytest.raises(ValueError, match="line 2 should be"):
        ClassFolder(folder)


# --------------------------------------------------------------------------
# class_images
# --------------------------------------------------------------------------


def test_class_images_tinyimagenet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'digits', 'tinyimagenet'"):
        class_images("tiny")
    with pytest.raises(FileNotFoundError) as info:
        class_images("tinyimagenet")
    message = str(info.value)
    assert "python -m lopbook.data prepare-tinyimagenet SRC OUT" in message
    assert "LOPBOOK_TINYIMAGENET" in message
    tiny = class_folder(tmp_path / "tiny", 2, 550, names=["a", "b"])
    assert class_images("tinyimagenet", root=tiny).kind == "tinyimagenet"
    monkeypatch.setenv("LOPBOOK_TINYIMAGENET", str(tiny))
    assert class_images("tinyimagenet").root == tiny


def test_class_images_auto_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiny = class_folder(tmp_path / "tiny", 2, 550, names=["a", "b"])
    imagenet = class_folder(tmp_path / "in32", 3, 700)
    monkeypatch.setenv("LOPBOOK_TINYIMAGENET", str(tiny))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a named data set: no fallback warning
        assert class_images("auto", download=False).kind == "tinyimagenet"
        assert class_images("auto", root=imagenet).kind == "imagenet32"
        monkeypatch.setenv("LOPBOOK_IMAGENET", str(imagenet))
        assert class_images("auto", download=False).kind == "imagenet32"
    monkeypatch.delenv("LOPBOOK_IMAGENET")
    monkeypatch.delenv("LOPBOOK_TINYIMAGENET")
    with pytest.warns(DataWarning) as record:
        assert class_images("auto", download=False).kind.startswith("digits-")
    unset = "LOPBOOK_IMAGENET and LOPBOOK_TINYIMAGENET unset"
    assert any(unset in str(w.message) for w in record)


# --------------------------------------------------------------------------
# the real Tiny ImageNet photographs (shared data folder)
# --------------------------------------------------------------------------


@pytest.mark.skipif(
    not (TINY_SHARED / "to_class_files.py").is_file(), reason="no shared Tiny ImageNet"
)
def test_real_tiny_imagenet_class_files(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    script = TINY_SHARED / "to_class_files.py"
    result = subprocess.run(
        [sys.executable, str(script), str(out), "--classes", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not (out / "lopbook.json").exists()  # recognised from the layout
    source = class_images("tinyimagenet", root=out)
    assert (source.n_classes, source.train_per_class, source.test_per_class) == (3, 500, 50)
    assert source.kind == "tinyimagenet" and source.warning is None
    assert "Tiny ImageNet" in source.name and "stand-in for Imagenet32" in source.name
    assert len(source.class_names) == 3 and all(source.class_names)
    assert len(source.class_ids) == 3 and all(w.startswith("n") for w in source.class_ids)
    words = np.load(TINY_SHARED / "train_60classes.npz")
    wnids, names = list(words["wnids"]), list(words["class_names"])
    assert source.class_names == [names[wnids.index(w)] for w in source.class_ids]
    images = source.images(0)
    assert images.shape == (550, 3, 32, 32) and images.dtype == np.uint8
    assert images.std() > 20  # photographs, not a constant
    x_train, y_train, x_test, y_test = BinaryTaskStream(source, seed=0).task(0)
    assert x_train.shape == (1000, 3, 32, 32) and x_test.shape == (100, 3, 32, 32)
    assert source.identity == ClassFolder(out).identity
