"""lopbook: the training code behind the book *Loss of plasticity in deep continual learning*."""
__version__ = "0.1.0"
