"""The lopbook.data subpackage: its public names, command line, atomic writes, width."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lopbook.data as data
import lopbook.io
from lopbook.data import images, locations, mnist, prepare, streams

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lopbook" / "data"

# every public name of the former single-module lopbook.data
FORMER_NAMES = [
    "DataWarning", "MNISTUnavailable", "DatasetUnavailable", "Dataset", "read_idx",
    "data_root", "default_cache_dir", "load_mnist", "load_digits_fallback",
    "mnist_or_digits", "PermutedMNISTStream", "ClassImages", "ImageNet32",
    "prepare_imagenet32", "CIFAR100Classes", "DigitClasses", "class_images",
    "BinaryTaskStream", "main",
]  # fmt: skip
NEW_NAMES = ["ClassFolder", "prepare_tinyimagenet", "short_class_name", "TINYIMAGENET_ENV"]


def test_public_names() -> None:
    for name in FORMER_NAMES + NEW_NAMES:
        assert name in data.__all__, name
        assert getattr(data, name) is not None
    namespace: dict[str, object] = {}
    exec("from lopbook.data import *", namespace)
    assert set(data.__all__) <= set(namespace)
    # each job lives in its module
    assert data.load_mnist is mnist.load_mnist and data.data_root is locations.data_root
    assert data.ImageNet32 is images.ClassFolder and data.class_images is images.class_images
    assert data.BinaryTaskStream is streams.BinaryTaskStream
    assert data.prepare_tinyimagenet is prepare.prepare_tinyimagenet
    assert (data.DATA_ENV, data.IMAGENET_ENV, data.TINYIMAGENET_ENV) == (
        "LOPBOOK_DATA",
        "LOPBOOK_IMAGENET",
        "LOPBOOK_TINYIMAGENET",
    )
    assert not hasattr(prepare, "_save_atomic")


def test_command_line_runs_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", "lopbook.data", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "prepare-imagenet32" in result.stdout and "prepare-tinyimagenet" in result.stdout
    assert result.stderr == ""
    with pytest.raises(SystemExit) as info:
        data.main(["prepare-tinyimagenet", str(tmp_path / "absent"), str(tmp_path / "o")])
    assert info.value.code == 1


def test_lines_fit_the_book_page() -> None:
    too_long = [
        f"{path.name}:{k}"
        for path in sorted(PACKAGE.glob("*.py"))
        for k, line in enumerate(path.read_text().splitlines(), start=1)
        if len(line) > 88
    ]
    assert too_long == []


def record_writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Route lopbook.io.atomic_write through a recorder (also where it was imported)."""
    written: list[Path] = []
    original = lopbook.io.atomic_write

    def recording(path, write):  # noqa: ANN001, ANN202
        written.append(Path(path))
        return original(path, write)

    monkeypatch.setattr(lopbook.io, "atomic_write", recording)
    monkeypatch.setattr(prepare, "atomic_write", recording)
    return written


def test_prepare_commands_write_every_file_atomically(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    written = record_writes(monkeypatch)
    src = tmp_path / "in32"
    src.mkdir()
    rows = np.random.default_rng(0).integers(0, 256, (14, 3072), dtype=np.uint8)
    batch = {"data": rows, "labels": [1, 2] * 7}
    (src / "train_data_batch_1").write_bytes(pickle.dumps(batch))
    data.prepare_imagenet32(src, tmp_path / "out32", images_per_class=7)
    out = sorted((tmp_path / "out32").iterdir())
    assert [p.name for p in out] == ["0.npy", "1.npy", "lopbook.json"]
    assert sorted(written) == out and written[-1].name == "lopbook.json"  # metadata last

    written.clear()
    tree = tmp_path / "tiny"
    for rel in ["train/n1/images/n1_0.JPEG", "train/n2/images/n2_0.JPEG"]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, "JPEG", quality=100)
        (tree / rel).write_bytes(buffer.getvalue())
    (tree / "val" / "images").mkdir(parents=True)
    (tree / "val" / "images" / "val_0.JPEG").write_bytes(buffer.getvalue())
    (tree / "val" / "images" / "val_1.JPEG").write_bytes(buffer.getvalue())
    (tree / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn2\nval_1.JPEG\tn1\n")
    (tree / "wnids.txt").write_text("n2\nn1\n")
    data.prepare_tinyimagenet(
        tree, tmp_path / "outtiny", train_per_class=1, val_per_class=1, progress=False
    )
    out = sorted((tmp_path / "outtiny").iterdir())
    assert [p.name for p in out] == ["0.npy", "1.npy", "classes.tsv", "lopbook.json"]
    assert sorted(written) == out and written[-1].name == "lopbook.json"
    source = data.ClassFolder(tmp_path / "outtiny")
    assert source.class_names == ["n1", "n2"]  # no words.txt: named by wnid
    np.testing.assert_allclose(source.images(1)[0, :, 5, 5], [10, 20, 30], atol=2)
