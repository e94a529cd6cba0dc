"""Metrics: streaming, reset per epoch/evaluation, reported by name."""

from .base import Mean, Metric, RootMeanSquaredError
from .factorized_top_k import FactorizedTopK
from .top_k_accuracy import TopKCategoricalAccuracy

__all__ = ["Metric", "Mean", "RootMeanSquaredError", "FactorizedTopK", "TopKCategoricalAccuracy"]
