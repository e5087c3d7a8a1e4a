"""prepare_tinyimagenet and its command line, on small trees of real JPEG files.

The trees have the official release's layout (wnids.txt, words.txt,
train/<wnid>/images/<wnid>_<k>.JPEG, val/images/val_<k>.JPEG with
val/val_annotations.txt), as a folder and as a zip file.  Every image has a
pattern whose 2x2 box average is known: JPEG at quality 100 without chroma
subsampling keeps the averages within 2 grey levels, while taking one pixel
per block instead of the mean would be 20 levels off.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lopbook import data
from lopbook.data import ClassFolder, box_downsample, prepare_tinyimagenet

REPO = Path(__file__).resolve().parents[1]

# wnids.txt is not sorted; class c is the c-th wnid in sorted order
WNIDS = ["n03000003", "n01000001", "n02000002"]
WORDS = {
    "n01000001": "goldfish, Carassius auratus",
    "n02000002": "tabby, tabby cat",
    "n03000003": "teapot",
    "n09999999": "not in this release",
}
# train file suffixes: file-name order puts _10 before _2
TRAIN_K = [0, 1, 10, 2]
# val_<k> -> wnid: two per class, mixed
VAL = ["n03000003", "n01000001", "n02000002", "n01000001", "n03000003", "n02000002"]
GREY = ("n02000002", 10)  # this training image is stored as greyscale (mode L)
GREY_NAME = (GREY[0], f"{GREY[0]}_{GREY[1]}.JPEG")


def pattern(v: int) -> np.ndarray:
    """64x64 RGB: left half columns alternating v, v + 40; right half coloured."""
    a = np.zeros((64, 64, 3), np.uint8)
    a[:, :32] = v
    a[:, 1:32:2] = v + 40
    a[:, 32:] = (v, 255 - v, 128)
    a[32:, 32:] = (3 * v) % 200
    return a


def value(wnid: str, name: str) -> int:
    """A distinct pattern value per image, from its class and file name."""
    return 10 + 30 * sorted(WNIDS).index(wnid) + 3 * (sum(name.encode()) % 7)


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    mode = "L" if array.ndim == 2 else "RGB"
    Image.fromarray(array, mode).save(buffer, "JPEG", quality=100, subsampling=0)
    return buffer.getvalue()


def expected_32(array: np.ndarray) -> np.ndarray:
    """The 2x2 block means, computed independently of box_downsample."""
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    means = array.reshape(32, 2, 32, 2, 3).astype(float).mean(axis=(1, 3))
    return np.floor(means + 0.5).astype(np.uint8)


def write_release(root: Path) -> dict[str, np.ndarray]:
    """The release tree under ``root``; returns the expected (6, 32, 32, 3) per wnid."""
    files: dict[str, bytes] = {
        "wnids.txt": ("\n".join(WNIDS) + "\n").encode(),
        "words.txt": "".join(f"{w}\t{n}\n" for w, n in WORDS.items()).encode(),
    }
    expected: dict[str, list[np.ndarray]] = {w: [] for w in WNIDS}
    for wnid in sorted(WNIDS):
        for k in sorted(TRAIN_K, key=str):  # file-name order
            name = f"{wnid}_{k}.JPEG"
            image = pattern(value(wnid, name))
            if (wnid, k) == GREY:
                image = image[:, :, 0]
            files[f"train/{wnid}/images/{name}"] = jpeg(image)
            expected[wnid].append(expected_32(image))
        files[f"train/{wnid}/{wnid}_boxes.txt"] = b"ignored\n"
    annotations = []
    for k, wnid in enumerate(VAL):
        name = f"val_{k}.JPEG"
        image = pattern(value(wnid, name))
        files[f"val/images/{name}"] = jpeg(image)
        annotations.append(f"{name}\t{wnid}\t0\t1\t60\t63\n")
    for wnid in WNIDS:  # val images of a class, in file-name order
        for k in [k for k, w in enumerate(VAL) if w == wnid]:
            image = pattern(value(wnid, f"val_{k}.JPEG"))
            expected[wnid].append(expected_32(image))
    files["val/val_annotations.txt"] = "".join(annotations).encode()
    files["test/images/test_0.JPEG"] = jpeg(pattern(99))  # unlabelled, ignored
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return {w: np.stack(images) for w, images in expected.items()}


def zip_release(tree: Path, path: Path) -> Path:
    """Zip ``tree`` the way the official zip is: everything under tiny-imagenet-200/."""
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(tree.rglob("*")):
            if file.is_file():
                archive.write(file, f"tiny-imagenet-200/{file.relative_to(tree)}")
    return path


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    tree = tmp_path / "tiny-imagenet-200"
    return tree, write_release(tree)


def prepare(src: Path, out: Path, **kwargs: object) -> None:
    kwargs.setdefault("train_per_class", 4)
    kwargs.setdefault("val_per_class", 2)
    prepare_tinyimagenet(src, out, progress=False, **kwargs)


def check_output(out: Path, expected: dict[str, np.ndarray], n_classes: int = 3) -> None:
    chosen = sorted(WNIDS)[:n_classes]
    class_files = sorted(p.name for p in out.glob("*.npy"))
    assert class_files == [f"{c}.npy" for c in range(n_classes)]
    for c, wnid in enumerate(chosen):
        array = np.load(out / f"{c}.npy")
        assert array.dtype == np.uint8 and array.shape == (6, 32, 32, 3)
        np.testing.assert_allclose(array, expected[wnid], atol=2, rtol=0)
    lines = (out / "classes.tsv").read_text().splitlines()
    assert lines[0] == "index\twnid\tname"
    assert lines[1:] == [f"{c}\t{w}\t{WORDS[w]}" for c, w in enumerate(chosen)]
    meta = json.loads((out / "lopbook.json").read_text())
    assert (meta["train_per_class"], meta["test_per_class"]) == (4, 2)
    assert meta["kind"] == "tinyimagenet"
    assert meta["name"].startswith(f"Tiny ImageNet 32x32 ({n_classes} classes")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files


# --------------------------------------------------------------------------
# box_downsample
# --------------------------------------------------------------------------


def test_box_downsample_is_the_rounded_mean_of_2x2_blocks() -> None:
    blocks = np.array([[0, 1], [1, 1]], np.uint8)  # mean 0.75 -> 1
    image = np.zeros((4, 4, 1), np.uint8)
    image[:2, :2, 0] = blocks
    image[:2, 2:, 0] = [[0, 0], [1, 1]]  # 0.5 -> 1 (half up)
    image[2:, :2, 0] = [[0, 0], [0, 1]]  # 0.25 -> 0
    image[2:, 2:, 0] = [[255, 255], [255, 254]]  # 254.75 -> 255, no overflow
    np.testing.assert_array_equal(box_downsample(image)[:, :, 0], [[1, 1], [0, 255]])
    batch = np.random.default_rng(0).integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
    exact = batch.reshape(3, 4, 2, 3, 2, 3).astype(float).mean(axis=(2, 4))
    np.testing.assert_array_equal(box_downsample(batch), np.floor(exact + 0.5))
    with pytest.raises(ValueError, match="even H and W"):
        box_downsample(np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        box_downsample(np.zeros((4, 4, 3), np.float32))


# --------------------------------------------------------------------------
# prepare_tinyimagenet
# --------------------------------------------------------------------------


def test_prepare_from_folder(
    tmp_path: Path, release: tuple[Path, dict[str, np.ndarray]]
) -> None:
    tree, expected = release
    prepare(tree, tmp_path / "out")
    check_output(tmp_path / "out", expected)
    # the greyscale image became RGB with equal channels
    c, position = sorted(WNIDS).index(GREY[0]), sorted(TRAIN_K, key=str).index(GREY[1])
    grey = np.load(tmp_path / "out" / f"{c}.npy")[position].astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1
    # a one-pixel pick per block would be 20 levels off in the alternating half
    assert np.abs(grey[:, :16, 0] - pattern(value(*GREY_NAME))[::2, :32:2, 0]).min() >= 18
    # the parent folder of tiny-imagenet-200 is accepted too
    prepare(tmp_path, tmp_path / "out2")
    for c in range(3):
        np.testing.assert_array_equal(
            np.load(tmp_path / "out" / f"{c}.npy"), np.load(tmp_path / "out2" / f"{c}.npy")
        )



def test_prepare_from_zip_matches_folder(
    tmp_path: Path, release: tuple[Path, dict[str, np.ndarray]]
) -> None:
    tree, expected = release
    archive = zip_release(tree, tmp_path / "tiny-imagenet-200.zip")
    prepare(archive, tmp_path / "from_zip")
    check_output(tmp_path / "from_zip", expected)
    prepare(tree, tmp_path / "from_folder")
    for name in ["0.npy", "1.npy", "2.npy", "classes.tsv", "lopbook.json"]:
        a, b = tmp_path / "from_zip" / name, tmp_path / "from_folder" / name
        assert a.read_bytes() == b.read_bytes(), name


def test_prepared_folder_loads_with_names_and_split(
    tmp_path: Path, release: tuple[Path, dict[str, np.ndarray]]
) -> None:
    tree, expected = release
    prepare(tree, tmp_path / "out")
    source = ClassFolder(tmp_path / "out")
    assert (source.n_classes, source.train_per_class, source.test_per_class) == (3, 4, 2)
    assert source.kind == "tinyimagenet" and source.warning is None
    assert "Tiny ImageNet" in source.name and "stand-in for Imagenet32" in source.name
    assert source.class_ids == sorted(WNIDS)
    assert source.class_names == [WORDS[w] for w in sorted(WNIDS)]
    assert [data.short_class_name(n) for n in source.class_names] == [
        "goldfish",
        "tabby",
        "teapot",
    ]
    x_train, y_train, x_test, y_test = data.BinaryTaskStream(source, seed=0).task(0)
    assert x_train.shape == (8, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
    a, _ = data.BinaryTaskStream(source, seed=0).classes(0)
    train_a = np.rint(x_train[:4].numpy() * 255).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(train_a, expected[sorted(WNIDS)[a]][:4], atol=2, rtol=0)


def test_prepare_first_classes_only(
    tmp_path: Path, release: tuple[Path, dict[str, np.ndarray]]
) -> None:
    tree, expected = release
    prepare(tree, tmp_path / "out", classes=2)
    check_output(tmp_path / "out", expected, n_classes=2)
    assert ClassFolder(tmp_path / "out").n_classes == 2
    with pytest.raises(ValueError, match="classes must lie in 1..3"):
        prepare(tree, tmp_path / "out", classes=4)
    # a folder with more class files than this run writes is refused, not mixed
    prepare(tree, tmp_path / "full")
    with pytest.raises(ValueError, match=r"already holds class files 2\.npy"):
        prepare(tree, tmp_path / "full", classes=2)


def test_prepare_errors(tmp_path: Path, release: tuple[Path, dict[str, np.ndarray]]) -> None:
    tree, _ = release
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200.zip"):
        prepare(tmp_path / "absent", out)
    with pytest.raises(ValueError, match="expected 500 .*damaged or incomplete"):
        prepare_tinyimagenet(tree, out, progress=False)  # the release's 500 + 50
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a folder or a zip file"):
        prepare(tmp_path / "junk.zip", out)

    wnid = sorted(WNIDS)[1]
    image = tree / "train" / wnid / "images" / f"{wnid}_1.JPEG"
    content = image.read_bytes()
    image.unlink()
    with pytest.raises(ValueError, match=f"{wnid}/images: holds 3 training images, expected 4"):
        prepare(tree, out)
    image.write_bytes(jpeg(pattern(50)[::2, ::2]))  # 32x32
    with pytest.raises(ValueError, match=f"{wnid}_1.JPEG: is 32x32 pixels.*64x64"):
        prepare(tree, out)
    image.write_bytes(b"\xff\xd8 not really a JPEG")
    with pytest.raises(ValueError, match=f"{wnid}_1.JPEG: cannot decode"):
        prepare(tree, out)
    image.write_bytes(content)

    (tree / "val" / "images" / "val_6.JPEG").write_bytes(jpeg(pattern(70)))
    with pytest.raises(ValueError, match="val_6.JPEG has no line in .*val_annotations.txt"):
        prepare(tree, out)
    (tree / "val" / "images" / "val_6.JPEG").unlink()
    annotations = tree / "val" / "val_annotations.txt"
    lines = annotations.read_text()
    annotations.write_text(lines.replace("n01000001", "n07777777", 1))
    with pytest.raises(ValueError, match="line 2 should be .*a wnid from wnids.txt"):
        prepare(tree, out)
    annotations.write_text("\n".join(lines.splitlines()[1:]) + "\n")  # val_0 unlabelled
    with pytest.raises(ValueError, match="val_0.JPEG has no line"):
        prepare(tree, out)
    annotations.unlink()
    with pytest.raises(FileNotFoundError, match="val_annotations.txt is missing"):
        prepare(tree, out)
    annotations.write_text(lines)
    (tree / "wnids.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no wnids.txt"):
        prepare(tree, out)


def test_failed_run_leaves_no_metadata(
    tmp_path: Path, release: tuple[Path, dict[str, np.ndarray]]
) -> None:
    tree, _ = release
    out = tmp_path / "out"
    prepare(tree, out)
    assert (out / "lopbook.json").is_file()
    last = sorted(WNIDS)[2]
    (tree / "train" / last / "images" / f"{last}_0.JPEG").write_bytes(b"broken")
    with pytest.raises(ValueError, match="cannot decode"):
        prepare(tree, out)
    # classes 0 and 1 were rewritten, class 2 failed: no metadata claims a complete folder
    assert not (out / "lopbook.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_missing_words_txt_names_classes_by_wnid(
    tmp_path: Path, release: tuple[Path, dict[str, np.ndarray]]
) -> None:
    tree, _ = release
    (tree / "words.txt").unlink()
    prepare(tree, tmp_path / "out")
    assert ClassFolder(tmp_path / "out").class_names == sorted(WNIDS)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOPBOOK_")}
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "lopbook.data", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=180,
    )


def test_cli_prepare_tinyimagenet(
    tmp_path: Path, release: tuple[Path, dict[str, np.ndarray]]
) -> None:
    tree, expected = release
    archive = zip_release(tree, tmp_path / "tiny-imagenet-200.zip")
    out = tmp_path / "out"
    result = run_cli(
        "prepare-tinyimagenet",
        str(archive),
        str(out),
        "--classes",
        "2",
        "--train-per-class",
        "4",
        "--val-per-class",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert f"LOPBOOK_TINYIMAGENET={out}" in result.stdout
    assert "Tiny ImageNet classes" in result.stderr  # the progress bar
    check_output(out, expected, n_classes=2)

    failed = run_cli("prepare-tinyimagenet", str(archive), str(tmp_path / "o2"))
    assert failed.returncode == 1
    assert "error:" in failed.stderr and "expected 500" in failed.stderr
    missing = run_cli("prepare-tinyimagenet", str(tmp_path / "nowhere"), str(out))
    assert missing.returncode == 1 and "tiny-imagenet-200.zip" in missing.stderr
