"""Datasets and splits: MovieLens 100K (TFDS schema), cached checksummed downloads, splits."""

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
from recstack.datasets.rating_splits import ml100k_fold, ml100k_u1_split, random_holdout
from recstack.datasets.splits import (
    leave_last_out,
    random_split,
    random_split_fractions,
    temporal_split,
)

__all__ = [
    "GENRE_LABELS",
    "ML_100K_SHA256",
    "ML_100K_URL",
    "OCCUPATION_LABELS",
    "MovieLens100K",
    "extract_zip",
    "fetch_verified",
    "leave_last_out",
    "load_movielens_100k",
    "ml100k_fold",
    "ml100k_u1_split",
    "random_holdout",
    "random_split",
    "random_split_fractions",
    "read_movielens_100k",
    "resolve_cache_dir",
    "temporal_split",
]
