"""Command line: ``python -m lopbook.data prepare-imagenet32|prepare-tinyimagenet``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .locations import IMAGENET_ENV, TINYIMAGENET_ENV
from .prepare import prepare_imagenet32, prepare_tinyimagenet


def _summary(function: object) -> str | None:
    doc = getattr(function, "__doc__", None)
    return doc.split("\n\n")[0] if doc else None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors exit with 1)."""
    parser = argparse.ArgumentParser(
        prog="python -m lopbook.data", description="lopbook data utilities"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    imagenet = commands.add_parser(
        "prepare-imagenet32",
        help="convert the official Imagenet32 training batches into class files",
        description=_summary(prepare_imagenet32),
    )
    imagenet.add_argument(
        "src", type=Path, help="folder with train_data_batch_1 ... train_data_batch_10"
    )
    imagenet.add_argument("out", type=Path, help="output folder for 0.npy ... 999.npy")
    imagenet.add_argument(
        "--images-per-class",
        type=int,
        default=700,
        help="images kept per class (default 700)",
    )
    imagenet.add_argument(
        "--test-per-class",
        type=int,
        default=None,
        help="of which test images (default images-per-class // 7, i.e. 100)",
    )

    tiny = commands.add_parser(
        "prepare-tinyimagenet",
        help="convert the Tiny ImageNet release into 32x32 per-class .npy files",
        description=_summary(prepare_tinyimagenet),
    )
    tiny.add_argument(
        "src", type=Path, help="tiny-imagenet-200.zip or the unzipped tiny-imagenet-200"
    )
    tiny.add_argument("out", type=Path, help="output folder for 0.npy ... 199.npy")
    tiny.add_argument(
        "--classes", type=int, default=None, help="write only the first N classes"
    )
    tiny.add_argument(
        "--train-per-class",
        type=int,
        default=500,
        help="training images each class must have (default 500)",
    )
    tiny.add_argument(
        "--val-per-class",
        type=int,
        default=50,
        help="validation images each class must have (default 50)",
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "prepare-imagenet32":
            prepare_imagenet32(
                args.src,
                args.out,
                images_per_class=args.images_per_class,
                test_per_class=args.test_per_class,
            )
            env = IMAGENET_ENV
        else:
            prepare_tinyimagenet(
                args.src,
                args.out,
                classes=args.classes,
                train_per_class=args.train_per_class,
                val_per_class=args.val_per_class,
            )
            env = TINYIMAGENET_ENV
    except (OSError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    print(f"wrote class files to {args.out}; use them with {env}={args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
