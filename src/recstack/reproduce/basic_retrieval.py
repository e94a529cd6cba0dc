"""TFRS "Recommending movies: retrieval" (seed 002), step by step in recstack.

The tutorial: user-id and movie-title embeddings of width 32, the Retrieval
task with FactorizedTopK over the 1682 MovieLens movies, Adagrad(0.1), batch
8192, 3 epochs, metrics computed during training too; the 80/20 split of the
shuffled ratings; a BruteForce index that maps the raw user id "42" to titles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..layers.candidates import TowerCandidates
from ..core.columns import Columns
from ..datasets import MovieLens100K, random_split
from ..features import StringLookup
from ..index import BruteForce
from ..layers import Embedding
from ..metrics import FactorizedTopK
from ..models.two_tower import TwoTowerRetrieval
from ..training.optimizers import Adagrad
from ..tasks import Retrieval
from ..training.history import History


@dataclass
class BasicRetrievalResult:
    """What one run of the tutorial produced."""

    test_metrics: dict[str, float]
    history: History
    evaluate_seconds: float
    recommendations: dict[str, list[str]] = field(default_factory=dict)
    model: TwoTowerRetrieval | None = None
    index: BruteForce | None = None

    def epoch_seconds(self) -> list[float]:
        return list(self.history.history["epoch_seconds"])


def build_basic_retrieval(data: MovieLens100K, embedding_dim: int = 32, split_seed: int = 42,
                          train_metrics: bool = True) -> tuple[TwoTowerRetrieval, Columns, Columns, dict[str, Any]]:
    """The tutorial's vocabularies, towers, model and encoded train/test columns."""
    ratings = data.ratings[["user_id", "movie_title"]]
    train_df, test_df = random_split(ratings, train_fraction=0.8, seed=split_seed)
    user_lookup = StringLookup(vocabulary=np.unique(ratings["user_id"].to_numpy()))
    title_lookup = StringLookup(vocabulary=np.unique(data.movies["movie_title"].to_numpy()))
    user_embedding = Embedding(user_lookup.vocabulary_size(), embedding_dim)
    movie_embedding = Embedding(title_lookup.vocabulary_size(), embedding_dim)
    # FactorizedTopK ranks against every row of the movies table, as the tutorial does
    # (titles repeat for 18 rows; the ids make a positive never count against itself).
    candidate_ids = title_lookup(data.movies["movie_title"].to_numpy())
    task = Retrieval(metrics=FactorizedTopK(TowerCandidates(movie_embedding, candidate_ids), candidate_ids))
    model = TwoTowerRetrieval(user_embedding, movie_embedding, task, query_inputs="user_id",
                              candidate_inputs="movie_title", candidate_id="movie_title",
                              train_metrics=train_metrics, deduplicate_candidates=True)

    def encode(df):
        return Columns({"user_id": user_lookup(df["user_id"].to_numpy()),
                        "movie_title": title_lookup(df["movie_title"].to_numpy())})

    extras = {"user_lookup": user_lookup, "title_lookup": title_lookup, "candidate_ids": candidate_ids,
              "movie_titles": data.movies["movie_title"].to_numpy()}
    return model, encode(train_df), encode(test_df), extras


def basic_retrieval(data: MovieLens100K, seed: int = 0, epochs: int = 3, batch_size: int = 8192,
                    learning_rate: float = 0.1, embedding_dim: int = 32, train_metrics: bool = True,
                    users: tuple[str, ...] = ("42",), k: int = 3, verbose: bool = False) -> BasicRetrievalResult:
    """Run the tutorial once: train, evaluate on the test split, recommend for ``users``.

    ``seed`` seeds the model initialisation; the split uses the tutorial's seed 42.
    Training batches are fixed across epochs, like the tutorial's
    ``train.shuffle(...).batch(8192).cache()`` pipeline.
    """
    torch.manual_seed(seed)
    model, train, test, extras = build_basic_retrieval(data, embedding_dim, train_metrics=train_metrics)
    optimizer = Adagrad(model.parameters(), lr=learning_rate)
    history = model.fit(train, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                        shuffle=False, verbose=verbose)
    start = time.perf_counter()
    metrics = model.evaluate(test, batch_size=4096)
    evaluate_seconds = time.perf_counter() - start
    index = BruteForce(nn.Sequential(extras["user_lookup"], model.query_tower), k=k)
    index.index_from_tower(model.candidate_tower, extras["candidate_ids"], identifiers=extras["movie_titles"])
    _, titles = index(list(users), k=k)
    recommendations = {u: [str(t) for t in row] for u, row in zip(users, titles)}
    return BasicRetrievalResult(metrics, history, evaluate_seconds, recommendations, model, index)
