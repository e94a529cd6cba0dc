"""Reproductions of the seed tutorials, as functions the benchmarks, demo and CLI share."""

from .basic_retrieval import BasicRetrievalResult, basic_retrieval

__all__ = ["BasicRetrievalResult", "basic_retrieval"]
