"""TFRS "Multi-task recommenders" (seed 001): shared embeddings, rating head + retrieval.

Batch 8192, 3 epochs, Adagrad(0.1), weights (rating, retrieval) of (1, 0), (0, 1) or (1, 1);
test top-100 and RMSE, and the predicted rating of user "42" for "Dances with Wolves (1990)".
"""

from __future__ import annotations

from typing import Any

import torch

from ..datasets import MovieLens100K, random_split
from ..models.movielens_features import fit_movielens_features
from ..models.multitask import MultiTaskModel
from ..training.optimizers import Adagrad

PUBLISHED = {(1.0, 0.0): (0.060, 1.113), (0.0, 1.0): (0.235, 3.773), (1.0, 1.0): (0.235, 1.131)}


def multitask(data: MovieLens100K, rating_weight: float = 1.0, retrieval_weight: float = 1.0, seed: int = 0,
              epochs: int = 3, batch_size: int = 8192, verbose: bool | str = False) -> dict[str, Any]:
    """Train and evaluate the tutorial's multi-task model once; returns test metrics and the rating."""
    train_df, test_df = random_split(data.ratings, 0.8, seed=42)
    features = fit_movielens_features(data.ratings, data.movies)
    torch.manual_seed(seed)
    model = MultiTaskModel.from_features(features, features.encode_movies(data.movies),
                                         rating_weight=rating_weight, retrieval_weight=retrieval_weight)
    model.fit(features.encode_ratings(train_df), epochs=epochs, batch_size=batch_size,
              optimizer=lambda p: Adagrad(p, lr=0.1), shuffle=False, verbose=verbose)
    metrics = model.evaluate(features.encode_ratings(test_df), batch_size=4096)
    user, movie = "42", "Dances with Wolves (1990)"
    rating = None
    if user in set(data.ratings["user_id"]) and movie in set(data.movies["movie_title"]):
        rating = float(model.predict([user], [movie])[2].reshape(-1)[0])
    return {"metrics": metrics, "predicted_rating": rating}
