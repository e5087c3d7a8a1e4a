"""The warning and errors of :mod:`lopbook.data`, and its shared argument check."""

from __future__ import annotations

import numpy as np

__all__ = ["DataWarning", "DatasetUnavailable", "MNISTUnavailable", "check_index"]


class DataWarning(UserWarning):
    """Warning category for every fallback to a substitute data set."""


class DatasetUnavailable(RuntimeError):
    """A data set is neither on disk nor downloadable right now."""


class MNISTUnavailable(DatasetUnavailable):
    """The requested MNIST split is neither on disk nor downloadable.

    Attributes
    ----------
    reason : str
        One-line summary of why, for use in fallback warnings.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_index(value: int, what: str) -> int:
    """Return ``value`` as an ``int`` if it is a non-negative integer, else raise.

    Raises
    ------
    ValueError
        If ``value`` is a bool, not an integer, or negative; the message names
        ``what``.
    """
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < 0
    ):
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)
