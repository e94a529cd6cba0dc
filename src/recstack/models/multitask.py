"""Joint rating + retrieval model of the TFRS "Multi-task recommenders" tutorial.

Shared user and movie embeddings feed two tasks:

    u = E_user[user_id], m = E_movie[title_id]                    ([B, d] each, d = 32)
    r_hat = MLP(256, 128, 1)(concat[u, m])                        ([B, 1], ReLU hidden)
    loss = rating_weight * MSE(r, r_hat) + retrieval_weight * Retrieval(u, m)

Both tasks are evaluated every step (a zero weight zeroes a task's gradient, not its
metrics), as the tutorial's ``compute_loss`` does. Trained data-parallel (``fit`` under
torch.distributed), each rank scores its rows against the movies of the whole global
batch and weighs its rating loss by its share of the rows, so the result is one process's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..layers.candidates import TowerCandidates
from ..core.columns import Batch
from ..core.errors import ConfigError, NotFittedError
from ..features import StringLookup
from ..layers.dense import MLP
from ..layers.embedding import Embedding
from ..metrics.base import RootMeanSquaredError
from ..metrics.factorized_top_k import FactorizedTopK
from ..tasks.ranking import Ranking
from ..tasks.retrieval import Retrieval
from ..training.model import Model
from .serving_spec import ServingSpec
from .two_tower import batch_candidates, distinct_rows, global_batch_loss


class MultiTaskModel(Model):
    """Rating regression and retrieval on shared id embeddings.

    Args:
        num_users: user vocabulary size (OOV included).
        num_items: item (title) vocabulary size (OOV included).
        candidate_ids: [C] item ids of the catalogue rows for FactorizedTopK (duplicates
            allowed: each row is embedded, an id's positions are masked together).
        rating_weight, retrieval_weight: loss weights.
        embedding_dim: d.
        rating_layers: widths of the rating head (last must be 1).
        user_lookup, item_lookup: fitted StringLookups for :meth:`predict` on raw values.
        train_metrics: update FactorizedTopK/RMSE during training (the tutorial does).
        user_column, item_column, rating_column: batch keys.
        ks: FactorizedTopK cut-offs.
    """

    distributed_ready = True  # movies gathered over ranks (batch_candidates), losses rescaled

    def __init__(self, num_users: int, num_items: int, candidate_ids: torch.Tensor,
                 rating_weight: float = 1.0, retrieval_weight: float = 1.0, embedding_dim: int = 32,
                 rating_layers: Sequence[int] = (256, 128, 1), user_lookup: StringLookup | None = None,
                 item_lookup: StringLookup | None = None, train_metrics: bool = True,
                 user_column: str = "user_id", item_column: str = "title_id",
                 rating_column: str = "user_rating", ks: Sequence[int] = (1, 5, 10, 50, 100)):
        super().__init__()
        if not rating_layers or int(rating_layers[-1]) != 1:
            raise ConfigError(f"rating_layers must end with 1 (a scalar rating); got {list(rating_layers)}.")
        self.user_model = Embedding(num_users, embedding_dim)
        self.movie_model = Embedding(num_items, embedding_dim)
        self.rating_model = MLP(2 * embedding_dim, list(rating_layers), activation="relu")
        candidate_ids = torch.as_tensor(candidate_ids).long()
        self.rating_task = Ranking(metrics=[RootMeanSquaredError()])
        self.retrieval_task = Retrieval(metrics=FactorizedTopK(
            TowerCandidates(self.movie_model, candidate_ids), candidate_ids=candidate_ids, ks=ks))
        self.rating_weight = float(rating_weight)
        self.retrieval_weight = float(retrieval_weight)
        self.user_lookup = user_lookup
        self.item_lookup = item_lookup
        self.train_metrics = train_metrics
        self.user_column, self.item_column, self.rating_column = user_column, item_column, rating_column

    @classmethod
    def from_features(cls, features: Any, movies: Any, **kwargs: Any) -> "MultiTaskModel":
        """Build from fitted :class:`~recstack.models.movielens_features.MovieLensFeatures` and
        the encoded catalogue (``features.encode_movies(movies_df)``)."""
        return cls(features.num_users, features.num_titles, movies["title_id"],
                   user_lookup=features.query["user_id"], item_lookup=features.candidate["title_id"], **kwargs)

    def forward(self, user_ids: torch.Tensor, item_ids: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoded ids [B], [B] -> (user embeddings [B, d], movie embeddings [B, d], ratings [B, 1])."""
        users = self.user_model(user_ids)
        movies = self.movie_model(item_ids)
        return users, movies, self.rating_model(torch.cat([users, movies], dim=1))

    def task_losses(self, batch: Batch, compute_metrics: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(rating loss, retrieval loss) of a batch, unweighted.

        The movie embedding depends only on the id, so the retrieval loss scores each distinct
        movie of the batch once with its multiplicity (same value and gradients as TFRS's
        in-batch softmax over all rows; see :func:`~recstack.models.two_tower.distinct_rows`).
        Across ranks, the candidates are the distinct movies of the whole global batch and both
        losses are this rank's share of the global batch's (they sum to one process's loss).
        """
        users = self.user_model(batch[self.user_column])
        rows = users.shape[0]
        global_items, offset, size = batch_candidates(batch, [], self.item_column)
        items, inverse, counts, _ = distinct_rows(global_items[self.item_column])
        local = inverse[offset:offset + rows]
        distinct_movies = self.movie_model(items)
        movies = distinct_movies.index_select(0, local)
        ratings = self.rating_model(torch.cat([users, movies], dim=1))
        rating_loss = self.rating_task(batch[self.rating_column], ratings, compute_metrics=compute_metrics)
        retrieval_loss = self.retrieval_task(users, distinct_movies, candidate_ids=items, positive_index=local,
                                             candidate_counts=counts, compute_metrics=compute_metrics)
        # MSE is a mean over this rank's rows: rescale to its share of the global batch's mean.
        return (rating_loss * (rows / max(size, 1)),
                global_batch_loss(retrieval_loss, self.retrieval_task, rows, size))

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        rating_loss, retrieval_loss = self.task_losses(batch, compute_metrics=self.train_metrics or not training)
        return self.rating_weight * rating_loss + self.retrieval_weight * retrieval_loss

    @torch.no_grad()
    def serving_spec(self) -> ServingSpec:
        """What :func:`recstack.serving.export` bundles: user tower on ``user_id``, movie tower
        on ``title_id`` and the rating head (so bundles can ``predict_rating``)."""
        return ServingSpec(self.user_model, "user_id", self.movie_model, "title_id",
                           rating_head=self.rating_model, kind="multitask")

    def predict(self, user_ids: Any, movie_titles: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw ids/titles (lists, arrays, Series of str) -> (user emb [B, d], movie emb [B, d], rating [B, 1]).

        Unknown values map to the OOV row, like the tutorial's StringLookup.
        """
        if self.user_lookup is None or self.item_lookup is None:
            raise NotFittedError("predict() needs user_lookup and item_lookup; build the model with "
                                 "MultiTaskModel.from_features(...) or pass fitted StringLookups.")
        was_training = self.training
        self.eval()
        try:
            return self(self.user_lookup(user_ids), self.item_lookup(movie_titles))
        finally:
            self.train(was_training)


__all__ = ["MultiTaskModel"]
