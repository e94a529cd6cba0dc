"""Tasks: loss layers over model outputs that also update metrics."""

from .base import Task
from .ranking import Ranking, mean_squared_error
from .retrieval import Retrieval, softmax_cross_entropy

__all__ = ["Task", "Ranking", "Retrieval", "mean_squared_error", "softmax_cross_entropy"]
