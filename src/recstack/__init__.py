"""recstack: recommender systems in PyTorch.

The public API: ``recstack.Model`` (write ``compute_loss``, get ``fit``/``evaluate``),
``recstack.Columns`` (encoded, batchable data), and the subpackages ``datasets``,
``features``, ``layers``, ``tasks``, ``metrics``, ``index``, ``models``, ``training``,
``serving`` and ``experiment`` (config-driven runs, as ``recstack train`` does them).
Layers and what lives where: docs/architecture.md.
"""

from . import layers, metrics, tasks
from .core import errors
from .core.columns import Columns
from .core.errors import DivergedError
from .core.id_lists import IdLists
from .core.exclusions import Exclusions
from .core.version import __version__
from .index import BruteForce, IndexTopK
from .layers import candidates
from .layers.candidates import TowerCandidates
from .serving.bundle import load_bundle
from .training import optimizers
from .training.history import History
from .training.model import Model

__all__ = [
    "BruteForce", "Columns", "DivergedError", "Exclusions", "History", "IdLists", "IndexTopK", "Model",
    "TowerCandidates", "load_bundle",
    "candidates", "errors", "layers", "metrics", "optimizers", "tasks", "__version__",
]
