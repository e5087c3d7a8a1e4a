"""Files that are never half-written, and a lock so that two processes never share a
run.

Every file lopbook writes (results, checkpoints, prepared data) goes through
:func:`atomic_write`: the content is written to a temporary file in the same
folder, flushed to disk, and moved into place with :func:`os.replace`, which is
atomic. A reader, or a process killed at any moment, sees the old file or the
new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_write", "write_text", "RunLocked", "locked"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` to fill a temporary file, then move it to ``path``.

    The temporary file lives beside ``path`` (same file system, so the move is
    atomic) and is removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # the bytes reach the disk before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class RunLocked(RuntimeError):
    """Another process is training the same run (it holds the run's lock file)."""


@contextlib.contextmanager
def locked(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (a ``.lock`` file in it) while the block
    runs.

    The lock is an advisory ``flock``: the operating system releases it when
    the process ends, however it ends, so a killed run never leaves a stale
    lock behind. A second process asking for the same lock gets
    :class:`RunLocked` at once instead of waiting. Temporary files of
    :func:`atomic_write` found in ``directory`` once the lock is held were left
    by a process killed while writing (only the lock's holder writes there):
    they are removed.
    """
    import fcntl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunLocked(
                f"{directory} is being trained by another process right now; wait for "
                "it to finish (its results are then loaded), or use another out_dir"
            ) from None
        for stale in directory.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        yield
    finally:
        handle.close()
