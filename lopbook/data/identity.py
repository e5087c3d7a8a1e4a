"""Content hashes behind the ``identity`` strings of data sets (for run keys).

An identity is stable across processes and machines for the same bytes, and
differs for different data, so that results are never reused for other data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["DIGEST_CHARS", "array_digest", "file_digest"]

#: Hex digits of SHA-1 kept in an identity.
DIGEST_CHARS = 12


def array_digest(arrays: Iterable[np.ndarray], header: str = "") -> str:
    """SHA-1 of ``header`` and of each array's dtype, shape and bytes, shortened."""
    sha = hashlib.sha1(header.encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        sha.update(f"|{array.dtype.str}{array.shape}|".encode())
        sha.update(array.data)
    return sha.hexdigest()[:DIGEST_CHARS]


def file_digest(listing: Iterable[tuple[str, int]], files: Iterable[Path]) -> str:
    """SHA-1 of a ``(name, size)`` listing and of the full bytes of ``files``."""
    sha = hashlib.sha1()
    for name, size in listing:
        sha.update(f"{name}\t{size}\n".encode())
    for path in files:
        sha.update(f"|{path.name}|".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:DIGEST_CHARS]
