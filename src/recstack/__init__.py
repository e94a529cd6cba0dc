"""recstack: recommender systems in PyTorch.

The public API: ``recstack.Model`` (write ``compute_loss``, get ``fit``/``evaluate``),
``recstack.Columns`` (encoded, batchable data), and the subpackages ``datasets``,
``features``, ``layers``, ``tasks``, ``metrics``, ``index``, ``models``, ``training``.
"""

from . import candidates, errors, layers, metrics, optimizers, tasks
from .candidates import TowerCandidates
from .columns import Columns
from .exclusions import Exclusions
from .index import BruteForce
from .models.base import Model
from .serving.bundle import load_bundle
from .training.history import History

__version__ = "0.1.0"

__all__ = [
    "BruteForce", "Columns", "Exclusions", "History", "Model", "TowerCandidates", "load_bundle",
    "candidates", "errors", "layers", "metrics", "optimizers", "tasks", "__version__",
]
