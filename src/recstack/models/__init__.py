"""Models: the Model base class and ready-made architectures."""

from .autorec import AutoRec
from .base import Model
from .biased_mf import BiasedMF
from .rating_data import RatingIndex, RatingMatrix, row_columns
from .two_tower import TwoTowerRetrieval

__all__ = ["AutoRec", "BiasedMF", "Model", "RatingIndex", "RatingMatrix", "TwoTowerRetrieval", "row_columns"]
