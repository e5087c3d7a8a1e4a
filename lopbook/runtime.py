"""Devices, random generators and a record of the software a result was made with."""

from __future__ import annotations

import os
import platform
import sys

import torch

__all__ = ["get_device", "make_generator", "derive_seed", "environment"]


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: the argument, else ``$LOPBOOK_DEVICE``, else CUDA when
    present, else CPU."""
    if device is None:
        device = os.environ.get("LOPBOOK_DEVICE") or (
            "cuda" if torch.cuda.is_available() else "cpu"
        )
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device} was asked for but CUDA is not available here; "
            "use device='cpu'"
        )
    return device


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (each run owns one: no
    global random state)."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for the random stream named by ``keys`` within run
    ``seed``."""
    import numpy as np

    return int(
        np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(
            2, np.uint64
        )[0]
        >> np.uint64(1)
    )


def environment(device: str | torch.device | None = None) -> dict:
    """Versions of Python and the libraries, and a description of ``device``, for the
    record of a result."""
    import numpy

    from . import __version__

    info = {
        "lopbook": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a requirement
        info["torchvision"] = None
    if device is not None:
        device = torch.device(device)
        info["device"] = str(device)
        if device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(device)
        else:
            info["device_name"] = platform.processor() or platform.machine()
    return info
