"""Building blocks: Keras-initialised embeddings and dense layers, retrieval loss transforms, sequence
encoders (SASRec-, GRU4Rec-style)."""

from .dense import MLP, Dense, make_activation
from .embedding import Embedding, MaskedMeanEmbedding
from .history_pooling import HistoryPooling
from .retrieval_loss import (
    hard_negative_mining,
    remove_accidental_hits,
    sampling_probability_correction,
    softmax_retrieval_loss,
)
from .sequence import GRU4RecEncoder, SASRecEncoder, SequenceEncoder, SequenceInput

__all__ = [
    "Dense", "Embedding", "GRU4RecEncoder", "HistoryPooling", "MLP", "MaskedMeanEmbedding", "SASRecEncoder", "SequenceEncoder",
    "SequenceInput", "make_activation", "hard_negative_mining", "remove_accidental_hits",
    "sampling_probability_correction", "softmax_retrieval_loss",
]
