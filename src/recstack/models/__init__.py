"""Models: the Model base class and ready-made architectures."""

from ..training.model import Model
from .autorec import AutoRec
from .baselines import EASE, Popularity, evaluate_retrieval
from .biased_mf import BiasedMF
from .feature_tower import FeatureTower, FeatureTwoTower
from .itemknn import ItemKNN
from .next_item_eval import (
    NextItemResult,
    NextItemScorer,
    evaluate_next_item,
    evaluate_sampled,
    rank_metrics,
    sampled_ranks,
    target_ranks,
)
from .rating_data import RatingIndex, RatingMatrix, row_columns
from .sequential import SequentialRetrieval
from .transitions import ItemTransitions, MostPopular
from .two_tower import TwoTowerRetrieval

__all__ = [
    "AutoRec", "BiasedMF", "EASE", "FeatureTower", "FeatureTwoTower", "ItemKNN", "ItemTransitions", "Model", "MostPopular",
    "NextItemResult", "NextItemScorer", "Popularity", "RatingIndex", "RatingMatrix", "SequentialRetrieval",
    "TwoTowerRetrieval", "evaluate_next_item", "evaluate_retrieval", "evaluate_sampled", "rank_metrics",
    "row_columns", "sampled_ranks", "target_ranks",
]
