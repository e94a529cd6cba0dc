"""Top-k indexes over candidate embeddings."""

from .brute_force import BruteForce

__all__ = ["BruteForce"]
