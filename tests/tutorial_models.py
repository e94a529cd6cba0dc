"""The TFRS tutorials' models written by hand, as the tutorials write them: test oracles.

Each is a ``recstack.Model`` subclass with the tutorial's ``compute_loss``, built from plain
layers in the tutorial's order. recstack does not ship them: the shipped path is the config
(``basic-retrieval``, ``multitask``) through the generic two-tower kind, and
tests/test_tutorial_oracles.py proves that path trains the same weights as these models.

* :class:`MovielensModel`: "Recommending movies: retrieval" (user-id and title embeddings,
  the Retrieval task).
* :class:`MultiTaskModel`: "Multi-task recommenders": shared embeddings feed a rating head
  and the Retrieval task,

      u = E_user[user_id], m = E_movie[movie_title]                ([B, d] each)
      r_hat = MLP(rating_layers)(concat[u, m])                     ([B, 1], ReLU hidden)
      loss = rating_weight * MSE(r, r_hat) + retrieval_weight * Retrieval(u, m)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

import recstack
from recstack.layers import MLP, Embedding
from recstack.metrics import FactorizedTopK, RootMeanSquaredError
from recstack.tasks import Ranking, Retrieval


class MovielensModel(recstack.Model):
    """The retrieval tutorial's model: ``compute_loss`` embeds the batch's users and movies and
    calls the Retrieval task (in-batch softmax over the batch's movies)."""

    def __init__(self, user_model: torch.nn.Module, movie_model: torch.nn.Module, task: Retrieval):
        super().__init__()
        self.user_model = user_model
        self.movie_model = movie_model
        self.task = task

    def compute_loss(self, batch, training: bool = False) -> torch.Tensor:
        user_embeddings = self.user_model(batch["user_id"])
        positive_movie_embeddings = self.movie_model(batch["movie_title"])
        return self.task(user_embeddings, positive_movie_embeddings)


def movielens_model(num_users: int, num_titles: int, catalogue: torch.Tensor, embedding_dim: int = 32) -> MovielensModel:
    """The tutorial's towers (user embedding first), task and FactorizedTopK over ``catalogue`` ids."""
    user_model = Embedding(num_users, embedding_dim)
    movie_model = Embedding(num_titles, embedding_dim)
    metric = FactorizedTopK(recstack.TowerCandidates(movie_model, catalogue), catalogue)
    return MovielensModel(user_model, movie_model, Retrieval(metrics=metric))


class MultiTaskModel(recstack.Model):
    """The multi-task tutorial's model.

    Args:
        num_users, num_items: vocabulary sizes (OOV included).
        catalogue: [C] item ids FactorizedTopK ranks against.
        rating_weight, retrieval_weight: the loss weights.
        embedding_dim: d.
        rating_layers: widths of the rating head (the last is 1).
    Batches: ``user_id``, ``movie_title`` (ids), ``user_rating`` (float).
    """

    def __init__(self, num_users: int, num_items: int, catalogue: torch.Tensor, rating_weight: float = 1.0,
                 retrieval_weight: float = 1.0, embedding_dim: int = 32, rating_layers: Sequence[int] = (256, 128, 1)):
        super().__init__()
        self.user_model = Embedding(num_users, embedding_dim)
        self.movie_model = Embedding(num_items, embedding_dim)
        self.rating_model = MLP(2 * embedding_dim, list(rating_layers), activation="relu")
        self.rating_task = Ranking(metrics=[RootMeanSquaredError()])
        self.retrieval_task = Retrieval(metrics=FactorizedTopK(
            recstack.TowerCandidates(self.movie_model, catalogue), catalogue))
        self.rating_weight, self.retrieval_weight = float(rating_weight), float(retrieval_weight)

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users = self.user_model(batch["user_id"])
        movies = self.movie_model(batch["movie_title"])
        return users, movies, self.rating_model(torch.cat([users, movies], dim=1))

    def task_losses(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(rating loss, retrieval loss), unweighted."""
        users, movies, ratings = self(batch)
        return self.rating_task(batch["user_rating"], ratings), self.retrieval_task(users, movies)

    def compute_loss(self, batch, training: bool = False) -> torch.Tensor:
        rating_loss, retrieval_loss = self.task_losses(batch)
        return self.rating_weight * rating_loss + self.retrieval_weight * retrieval_loss
