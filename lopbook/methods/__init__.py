"""Learning methods, one file each, and the registry that names them.

A method is a :class:`~lopbook.methods.base.Method` subclass with a name, a
label and a :class:`~lopbook.methods.base.Hyperparameters` dataclass; adding
one is a new file here plus one line in :data:`REGISTRY`.

>>> sorted(REGISTRY)[:2]
['backprop', 'continual_backprop']
>>> settings("continual_backprop", replacement_rate=1e-3).maturity_threshold
100
"""

from __future__ import annotations

import dataclasses

from .backprop import Backprop
from .base import Hyperparameters, Method, Networks, require
from .continual_backprop import ContinualBackprop
from .l2 import L2
from .l2_init import L2Init
from .normalize_and_project import NormalizeAndProject
from .redo import ReDo
from .self_normalized_resets import SelfNormalizedResets
from .shrink_and_perturb import ShrinkAndPerturb
from .spectral_regularization import SpectralRegularization
from .upgd import UPGD
from .weight_clipping import WeightClipping

__all__ = [
    "REGISTRY",
    "get",
    "settings",
    "hyperparameter_names",
    "Method",
    "Hyperparameters",
    "Networks",
    "require",
]

#: every method, by name
REGISTRY: dict[str, type[Method]] = {
    m.name: m
    for m in (
        Backprop,
        L2,
        ShrinkAndPerturb,
        ContinualBackprop,
        L2Init,
        ReDo,
        WeightClipping,
        UPGD,
        NormalizeAndProject,
        SpectralRegularization,
        SelfNormalizedResets,
    )
}


def get(name: str) -> type[Method]:
    """The method registered as ``name``."""
    if name not in REGISTRY:
        raise ValueError(
            f"unknown method {name!r}; the methods are {', '.join(REGISTRY)} "
            "(lopbook.methods.REGISTRY)"
        )
    return REGISTRY[name]


def hyperparameter_names(name: str) -> list[str]:
    """The hyperparameters of method ``name``."""
    return [f.name for f in dataclasses.fields(get(name).Settings)]


def settings(name: str, **values) -> Hyperparameters:
    """Method ``name``'s hyperparameters: its defaults, overridden by ``values``,
    checked."""
    known = hyperparameter_names(name)
    for key in values:
        if key not in known:
            owners = [m for m in REGISTRY if key in hyperparameter_names(m)]
            hint = (
                f" ({key} is a hyperparameter of {', '.join(owners)})" if owners else ""
            )
            raise ValueError(
                f"method {name!r} has no hyperparameter {key!r}{hint}; its "
                f"hyperparameters are: {', '.join(known) or 'none'}"
            )
    result = get(name).Settings(**values)
    result.check()
    return result
