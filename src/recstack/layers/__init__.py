"""Building blocks: Keras-initialised embeddings and dense layers, retrieval loss transforms."""

from .dense import MLP, Dense, make_activation
from .embedding import Embedding, MaskedMeanEmbedding
from .retrieval_loss import (
    hard_negative_mining,
    remove_accidental_hits,
    sampling_probability_correction,
    softmax_retrieval_loss,
)

__all__ = [
    "Dense", "Embedding", "MLP", "MaskedMeanEmbedding", "make_activation", "hard_negative_mining",
    "remove_accidental_hits", "sampling_probability_correction", "softmax_retrieval_loss",
]
