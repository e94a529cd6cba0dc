"""Datasets and splits: MovieLens 100K (TFDS schema), 1M and 20M, cached checksummed downloads, splits,
and the per-user sequences of next-item recommendation (:mod:`recstack.datasets.sequences`; its global
temporal protocol is exported as ``temporal_sequence_split``, beside the table split ``temporal_split``)."""

from recstack.datasets.filters import KCore, k_core
from recstack.datasets.download import extract_zip, fetch_verified, resolve_cache_dir
from recstack.datasets.movielens import (
    GENRE_LABELS,
    ML_100K_SHA256,
    ML_100K_URL,
    OCCUPATION_LABELS,
    MovieLens100K,
    load_movielens_100k,
    read_movielens_100k,
)
from recstack.datasets import sequences
from recstack.datasets.movielens_large import (
    ML_1M,
    ML_20M,
    MovieLensTables,
    load_movielens_1m,
    load_movielens_20m,
    read_movielens_1m,
    read_movielens_20m,
)
from recstack.datasets.rating_splits import ml100k_fold, ml100k_u1_split, random_holdout
from recstack.datasets.sampled_negatives import sample_negatives
from recstack.datasets.sequences import (
    EvalSequences,
    Histories,
    SequenceSplit,
    TrainingSequences,
    build_histories,
    leave_one_out,
    targets_after,
    training_sequences,
)
from recstack.datasets.sequences import temporal_split as temporal_sequence_split
from recstack.datasets.splits import (
    leave_last_out,
    per_user_random_split,
    random_split,
    random_split_fractions,
    temporal_split,
)

__all__ = [
    "EvalSequences",
    "GENRE_LABELS",
    "Histories",
    "KCore",
    "ML_100K_SHA256",
    "ML_100K_URL",
    "ML_1M",
    "ML_20M",
    "MovieLens100K",
    "MovieLensTables",
    "OCCUPATION_LABELS",
    "SequenceSplit",
    "TrainingSequences",
    "build_histories",
    "extract_zip",
    "fetch_verified",
    "k_core",
    "leave_last_out",
    "leave_one_out",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_movielens_20m",
    "ml100k_fold",
    "ml100k_u1_split",
    "random_holdout",
    "per_user_random_split",
    "random_split",
    "random_split_fractions",
    "read_movielens_100k",
    "read_movielens_1m",
    "read_movielens_20m",
    "resolve_cache_dir",
    "sample_negatives",
    "sequences",
    "targets_after",
    "temporal_sequence_split",
    "temporal_split",
    "training_sequences",
]
