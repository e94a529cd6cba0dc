"""Models: the Model base class and ready-made architectures."""

from .autorec import AutoRec
from ..training.model import Model
from .baselines import EASE, Popularity, evaluate_retrieval
from .biased_mf import BiasedMF
from .movielens_features import MovieLensFeatures, fit_movielens_features
from .multitask import MultiTaskModel
from .rating_data import RatingIndex, RatingMatrix, row_columns
from .towers import CandidateTower, MaskedMeanEmbedding, QueryTower
from .two_tower import TwoTowerRetrieval

__all__ = [
    "AutoRec", "BiasedMF", "CandidateTower", "EASE", "MaskedMeanEmbedding", "Model", "MovieLensFeatures",
    "MultiTaskModel", "Popularity", "QueryTower", "RatingIndex", "RatingMatrix", "TwoTowerRetrieval",
    "evaluate_retrieval", "fit_movielens_features", "row_columns",
]
