"""lopbook: the training code behind the book *Loss of plasticity in deep continual
learning*.

Modules: :mod:`~lopbook.nets` (the paper's networks), :mod:`~lopbook.learners`
(backprop, Shrink-and-Perturb,
continual backprop), :mod:`~lopbook.metrics` (dead units, weight magnitude, effective
rank), :mod:`~lopbook.data`
(Permuted MNIST and Continual ImageNet streams), :mod:`~lopbook.engine` (many runs in
lockstep),
:mod:`~lopbook.experiments` (configs and runners), :mod:`~lopbook.results` and
:mod:`~lopbook.plots`.
"""

__version__ = "0.1.0"

from .runtime import get_device  # noqa: E402

__all__ = ["get_device", "__version__"]
