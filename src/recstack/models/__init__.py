"""Models: the Model base class and ready-made architectures."""

from ..training.model import Model
from .autorec import AutoRec
from .baselines import EASE, Popularity, evaluate_retrieval
from .biased_mf import BiasedMF
from .feature_tower import FeatureTower, FeatureTwoTower
from .rating_data import RatingIndex, RatingMatrix, row_columns
from .two_tower import TwoTowerRetrieval

__all__ = [
    "AutoRec", "BiasedMF", "EASE", "FeatureTower", "FeatureTwoTower", "Model", "Popularity", "RatingIndex",
    "RatingMatrix", "TwoTowerRetrieval", "evaluate_retrieval", "row_columns",
]
