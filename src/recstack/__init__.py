"""recstack: recommender systems in PyTorch.

The public API: ``recstack.Model`` (write ``compute_loss``, get ``fit``/``evaluate``),
``recstack.Columns`` (encoded, batchable data), and the subpackages ``datasets``,
``features``, ``layers``, ``tasks``, ``metrics``, ``index``, ``models``, ``training``.
"""

from . import layers, metrics, tasks
from .core import errors
from .layers import candidates
from .training import optimizers
from .layers.candidates import TowerCandidates
from .core.columns import Columns
from .core.version import __version__
from .core.exclusions import Exclusions
from .index import BruteForce
from .training.model import Model
from .serving.bundle import load_bundle
from .training.history import History


__all__ = [
    "BruteForce", "Columns", "Exclusions", "History", "Model", "TowerCandidates", "load_bundle",
    "candidates", "errors", "layers", "metrics", "optimizers", "tasks", "__version__",
]
