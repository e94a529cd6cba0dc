"""d2l's AutoRec (seed 004): item-based AutoRec on a random 90/10 split of MovieLens 100K.

Dense(500, sigmoid) encoder, dropout 0.05, linear decoder, loss on observed ratings only;
Adam(lr 0.002, weight decay 1e-5), 25 epochs, batch 256. d2l reports test RMSE 0.895.
"""

from __future__ import annotations

from typing import Any

import torch

from ..datasets import MovieLens100K, random_holdout
from ..models.autorec import AutoRec
from ..models.rating_data import RatingIndex, RatingMatrix

PUBLISHED_RMSE = 0.895


def autorec(data: MovieLens100K, seed: int = 0, epochs: int = 25, hidden: int = 500,
            verbose: bool | str = False) -> dict[str, Any]:
    """Train the d2l setting once (split ``seed``); returns the test RMSE per epoch."""
    index = RatingIndex.from_frame(data.ratings)
    train, test = random_holdout(data.ratings, test_fraction=0.1, seed=seed)
    torch.manual_seed(seed)
    model = AutoRec(RatingMatrix.from_frame(train, index), based="item", hidden_sizes=(hidden,),
                    encoder_activation="sigmoid", decoder_activation="identity", dropout=0.05)
    pairs = index.pairs(test)
    history = model.fit(model.train_columns(), epochs=epochs, batch_size=256, seed=seed, verbose=verbose,
                        optimizer=lambda p: torch.optim.Adam(p, lr=0.002, weight_decay=1e-5),
                        validation_data=pairs, validation_batch_size=max(len(test), 1))
    curve = history.history["val_root_mean_squared_error"]
    return {"metrics": {"root_mean_squared_error": curve[-1]}, "rmse_curve": curve}
