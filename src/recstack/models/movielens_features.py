"""Fitted MovieLens features for :class:`QueryTower` / :class:`CandidateTower` (and the
id-only models): vocabularies, timestamp buckets and normalisation, title tokens.

As in the TFRS tutorials, vocabularies and timestamp statistics are fitted on the
full ratings table (user ids, timestamps) and the movies table (titles, title text);
no label is used. Titles are the movie identity: the 1682 movies rows hold 1664
distinct titles, and duplicated titles share one ``title_id``, which is therefore the
``candidate_ids`` to give FactorizedTopK.

Encoded query columns: ``user_id`` (LongTensor, 0 = OOV), ``timestamp_bucket``
(LongTensor in 0..num_buckets-1), ``timestamp_norm`` (float32). Encoded candidate
columns: ``title_id`` (LongTensor), ``title_tokens`` (LongTensor [n, L], 0 = padding).
``encode_ratings`` adds ``user_rating`` (float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.columns import Columns
from ..features import Discretization, FeatureSet, Normalization, StringLookup, TextVectorization


@dataclass
class MovieLensFeatures:
    """The two fitted FeatureSets of the towers.

    Attributes:
        query: ``user_id`` <- user_id, ``timestamp_bucket`` / ``timestamp_norm`` <- timestamp.
        candidate: ``title_id`` / ``title_tokens`` <- movie_title.
    """

    query: FeatureSet
    candidate: FeatureSet

    # Sizes the towers need ----------------------------------------------------
    @property
    def num_users(self) -> int:
        """User embedding rows (OOV included)."""
        return self.query["user_id"].vocabulary_size()

    @property
    def num_timestamp_buckets(self) -> int:
        """Timestamp-bucket embedding rows (boundaries + 1)."""
        return self.query["timestamp_bucket"].num_buckets()

    @property
    def num_titles(self) -> int:
        """Title embedding rows (OOV included)."""
        return self.candidate["title_id"].vocabulary_size()

    @property
    def num_tokens(self) -> int:
        """Title-token embedding rows (padding and OOV included)."""
        return self.candidate["title_tokens"].vocabulary_size()

    def tower_sizes(self) -> dict[str, int]:
        """Keyword arguments for QueryTower / CandidateTower sizes."""
        return {"num_users": self.num_users, "num_timestamp_buckets": self.num_timestamp_buckets,
                "num_titles": self.num_titles, "num_tokens": self.num_tokens}

    # Encoding ----------------------------------------------------------------
    def encode_ratings(self, ratings: pd.DataFrame) -> Columns:
        """Ratings rows -> Columns with the query and candidate columns (+ ``user_rating``)."""
        cols: dict[str, torch.Tensor] = {**self.query.transform(ratings), **self.candidate.transform(ratings)}
        if "user_rating" in ratings:
            cols["user_rating"] = torch.from_numpy(ratings["user_rating"].to_numpy(np.float32, copy=True))
        return Columns(cols)

    def encode_movies(self, movies: pd.DataFrame) -> Columns:
        """Movies rows -> Columns ``title_id``, ``title_tokens`` (the candidate set, in row order)."""
        return Columns(self.candidate.transform(movies))


def fit_movielens_features(ratings: pd.DataFrame, movies: pd.DataFrame, num_timestamp_boundaries: int = 1000,
                           max_tokens: int = 10_000) -> MovieLensFeatures:
    """Fit the tutorial's preprocessing on MovieLens tables.

    * ``user_id``: StringLookup over ``ratings.user_id`` (sorted vocabulary, OOV = 0).
    * ``timestamp_bucket``: Discretization with ``np.linspace(min, max, num_timestamp_boundaries)``
      boundaries (ascending; ``num_timestamp_boundaries + 1`` buckets).
    * ``timestamp_norm``: Normalization fitted on ``ratings.timestamp``.
    * ``title_id``: StringLookup over ``movies.movie_title``.
    * ``title_tokens``: TextVectorization(max_tokens) fitted on ``movies.movie_title``.

    Args:
        ratings: table with ``user_id`` and ``timestamp`` (the full ratings, as in TFRS).
        movies: table with ``movie_title`` (the candidate catalogue).
    """
    timestamps = ratings["timestamp"].to_numpy()
    query = FeatureSet({"user_id": StringLookup()})
    query.add("timestamp_bucket", Discretization.equal_width(
        float(timestamps.min()), float(timestamps.max()), num_timestamp_boundaries), "timestamp")
    query.add("timestamp_norm", Normalization(), "timestamp")
    query.fit(ratings)
    candidate = FeatureSet()
    candidate.add("title_id", StringLookup(), "movie_title")
    candidate.add("title_tokens", TextVectorization(max_tokens=max_tokens), "movie_title")
    candidate.fit(movies)
    return MovieLensFeatures(query, candidate)


__all__ = ["MovieLensFeatures", "fit_movielens_features"]
