"""cegeo: train classifiers on label-imbalanced data, guided by the implicit geometry of
re-parameterized cross-entropy losses (Behnia et al., AISTATS 2023).

Convention: the imbalance ratio is R = n_max / n_min >= 1 everywhere.
"""

from ._validation import InputError
from .losses import ParametricCE, create_loss, list_losses

__version__ = "0.1.0"

__all__ = ["InputError", "ParametricCE", "__version__", "create_loss", "list_losses"]
