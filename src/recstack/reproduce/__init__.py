"""Reproductions of the seed tutorials, as functions the benchmarks, demo and CLI share."""

from .autorec import autorec
from .basic_retrieval import BasicRetrievalResult, basic_retrieval
from .deep_retrieval import deep_retrieval
from .multitask import multitask

__all__ = ["BasicRetrievalResult", "autorec", "basic_retrieval", "deep_retrieval", "multitask"]
