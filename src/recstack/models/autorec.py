"""AutoRec (Sedhain et al., 2015; d2l 16.4): rating prediction with an autoencoder.

An item-based AutoRec reads one item's column of the training rating matrix,
``R[:, i]`` (users as features, unobserved ratings = 0), and reconstructs it:

    h(R[:, i]) = g(V · dropout(f(W · R[:, i] + mu)) + b)          [num_users]

with ``f`` the encoder and ``g`` the decoder activation (d2l: sigmoid and identity).
A user-based AutoRec does the same with one user's row ``R[u, :]`` (items as features).
The predicted rating r_ui is entry u of the item-i reconstruction (entry i of the
user-u reconstruction for the user-based variant).

Loss (masked, on observed entries only): for a batch of rows X [B, width] with mask M,

    loss = sum_{(b, j): M[b, j]} (h(X_b)_j - X_bj)^2 / sum_{b, j} M[b, j]

i.e. the mean squared error over the *observed* entries of the batch. This is not
d2l's trick of multiplying predictions by sign(input) under a per-row mean over all
``width`` entries, whose scale depends on how sparse the batch is (and which, under
coupled weight decay, changes the effective regularisation); the gradients reach only
the observed entries either way. Weight decay is the optimiser's (d2l uses MXNet Adam
``wd=1e-5``, i.e. ``torch.optim.Adam(weight_decay=1e-5)``); ``l2`` adds
``l2 * sum ||W||^2`` over the weight matrices to the loss instead.

Evaluation follows d2l's evaluator: each needed row is reconstructed from the *training*
matrix and the held-out entries are read off. Predictions are clipped to the rating range
when the model is evaluated or asked for ratings (not in the training loss, where
clipping would zero the gradients).

Ids: raw ids go through the :class:`~recstack.models.rating_data.RatingIndex` of the
training matrix; an id missing from it raises :class:`~recstack.core.errors.DataError`.
A user or item that is in the index but has no training rating ("cold") is predicted by
the ``cold_start`` policy: ``"global_mean"`` (default: the training mean) or ``"model"``
(whatever the network reconstructs, as in d2l).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..core.columns import Batch, Columns
from ..core.errors import ConfigError, DataError
from ..layers.dense import Dense
from ..metrics.base import Metric, RootMeanSquaredError
from ..tasks.ranking import Ranking
from ..training.model import Model
from .rating_data import RatingMatrix, row_columns

__all__ = ["AutoRec"]

Based = Literal["item", "user"]
ColdStart = Literal["global_mean", "model"]


class AutoRec(Model):
    """Item- or user-based AutoRec over a fixed training rating matrix.

    Args:
        train: the training :class:`RatingMatrix` (inputs at training *and* prediction
            time; kept as non-persistent buffers, so ``save_weights`` stores only weights
            and a model must be rebuilt from the same matrix before ``load_weights``).
        based: ``"item"`` (rows are items, width num_users; d2l and I-AutoRec) or
            ``"user"`` (rows are users, width num_items; U-AutoRec).
        hidden_sizes: widths of the encoder's hidden layers, e.g. ``(500,)`` (d2l) or
            ``(500, 500)``; each is followed by ``encoder_activation`` and dropout.
        encoder_activation, decoder_activation: names for
            :func:`recstack.layers.make_activation` (d2l: "sigmoid", "identity").
        dropout: dropout rate after every hidden layer (d2l: 0.05); off in eval mode.
        init_std: weights ~ Normal(0, init_std) (d2l: 0.01); ``None`` keeps glorot-uniform.
            Biases start at 0.
        l2: penalty ``l2 * ||W||^2`` per weight matrix, added to each batch's loss.
        rating_range: (low, high) clip for predictions; ``"auto"`` = the training
            matrix's (min, max); ``None`` disables clipping.
        cold_start: prediction for users/items without training ratings (see module doc).
        metrics: metrics for the Ranking task (default RootMeanSquaredError).
        persistent_data: keep the training matrix, its cold-start masks, the training mean and
            the rating range in the ``state_dict`` (a saved model then predicts on its own; the
            ``recstack train`` kind uses this). Default: weights only.

    Data:
        * ``fit(model.train_columns(), ...)``: batches of ``{"row": [B] int64}``; the loss is
          the masked MSE above and the task's metrics see the observed training entries.
        * ``fit(..., validation_data=index.pairs(test_df))`` or ``evaluate`` on
          ``{"user", "item", "rating"}`` pairs: clipped predictions vs ratings, so
          ``root_mean_squared_error`` is the held-out RMSE.

    Example:
        >>> index = RatingIndex.from_frame(ratings)
        >>> model = AutoRec(RatingMatrix.from_frame(train_df, index), hidden_sizes=(500,))
        >>> model.fit(model.train_columns(), epochs=25, batch_size=256,
        ...           optimizer=lambda p: torch.optim.Adam(p, lr=0.002, weight_decay=1e-5),
        ...           validation_data=index.pairs(test_df), validation_batch_size=16384)
    """

    def __init__(
        self,
        train: RatingMatrix,
        based: Based = "item",
        hidden_sizes: Sequence[int] = (500,),
        encoder_activation: str = "sigmoid",
        decoder_activation: str = "identity",
        dropout: float = 0.05,
        init_std: float | None = 0.01,
        l2: float = 0.0,
        rating_range: tuple[float, float] | Literal["auto"] | None = "auto",
        cold_start: ColdStart = "global_mean",
        metrics: Metric | Sequence[Metric] | None = None,
        persistent_data: bool = False,
    ) -> None:
        super().__init__()
        if based not in ("item", "user"):
            raise ConfigError(f"based must be 'item' or 'user'; got {based!r}")
        sizes = [int(h) for h in hidden_sizes]
        if not sizes or min(sizes) < 1:
            raise ConfigError(f"hidden_sizes must be one or more positive widths; got {tuple(hidden_sizes)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {dropout}")
        if cold_start not in ("global_mean", "model"):
            raise ConfigError(f"cold_start must be 'global_mean' or 'model'; got {cold_start!r}")
        if train.num_ratings == 0:
            raise DataError("the training rating matrix has no observed ratings")
        self.based: Based = based
        self.index = train.index
        self.cold_start: ColdStart = cold_start
        bounds = train.rating_range() if rating_range == "auto" else rating_range
        if bounds is not None and not bounds[0] <= bounds[1]:
            raise ConfigError(f"rating_range must be (low, high) with low <= high; got {bounds}")
        self.clips = bounds is not None

        inputs, observed = train.oriented(based)
        # Data, not weights: buffers that follow .to(device), saved only with persistent_data.
        keep = bool(persistent_data)
        self.register_buffer("inputs", inputs, persistent=keep)     # [rows, width]
        self.register_buffer("observed", observed, persistent=keep)  # [rows, width] bool
        # Rows/columns with no training rating, for the cold-start policy.
        self.register_buffer("row_has_data", observed.any(dim=1), persistent=keep)
        self.register_buffer("col_has_data", observed.any(dim=0), persistent=keep)
        # [training mean, low, high] (float64; low/high NaN without clipping).
        stats = [train.global_mean(), *(bounds if bounds is not None else (math.nan, math.nan))]
        self.register_buffer("rating_stats", torch.tensor(stats, dtype=torch.float64), persistent=keep)

        width = inputs.shape[1]
        layers: list[nn.Module] = []
        fan_in = width
        for size in sizes:
            layers += [Dense(fan_in, size, activation=encoder_activation, l2=l2), nn.Dropout(dropout)]
            fan_in = size
        self.encoder = nn.Sequential(*layers)
        self.decoder = Dense(fan_in, width, activation=decoder_activation, l2=l2)
        if init_std is not None:
            for module in self.modules():
                if isinstance(module, Dense):
                    nn.init.normal_(module.weight, 0.0, init_std)
                    nn.init.zeros_(module.bias)
        self.task = Ranking(metrics=metrics if metrics is not None else [RootMeanSquaredError()])

    # Shapes -------------------------------------------------------------------------------
    @property
    def global_mean(self) -> float:
        """Mean training rating (the cold-start prediction)."""
        return float(self.rating_stats[0])

    @property
    def rating_range(self) -> tuple[float, float] | None:
        """(low, high) clipping range of predictions, or None."""
        return (float(self.rating_stats[1]), float(self.rating_stats[2])) if self.clips else None

    @property
    def num_rows(self) -> int:
        """Input vectors: num_items (item-based) or num_users (user-based)."""
        return self.inputs.shape[0]

    @property
    def width(self) -> int:
        """Length of one input/reconstruction: num_users (item-based) or num_items."""
        return self.inputs.shape[1]

    def train_columns(self) -> Columns:
        """Training data for ``fit``: ``{"row": arange(num_rows)}``."""
        return row_columns(self.num_rows)

    # Network ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct rating vectors: [B, width] -> [B, width] (unclipped)."""
        return self.decoder(self.encoder(x))

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        if "row" in batch:
            rows = batch["row"].to(self.inputs.device)
            x = self.inputs.index_select(0, rows)
            mask = self.observed.index_select(0, rows)
            recon = self(x)
            predictions = recon[mask]
            if not training:
                predictions = self._clip(predictions)
            # Ranking's default loss is sum(err^2) / n over the n observed entries.
            return self.task(x[mask], predictions)
        if {"user", "item", "rating"} <= batch.keys():
            if training:
                raise ConfigError(
                    "AutoRec trains on whole rows: fit(model.train_columns(), ...). "
                    "(user, item, rating) pairs are for validation_data/evaluate.")
            predictions = self._predict_indices(batch["user"], batch["item"], clip=True)
            return self.task(batch["rating"].to(predictions), predictions)
        raise ConfigError(
            f"AutoRec batches need a 'row' column (training rows) or 'user', 'item' and "
            f"'rating' columns (held-out ratings); got {sorted(batch)}.")

    def training_data(self, interactions: Columns | None = None) -> Columns:
        """What ``fit`` trains on: the matrix rows (``train_columns``), whatever the interactions.

        ``recstack train`` calls this hook with the encoded interaction rows it would train
        another model on; AutoRec already holds them as its rating matrix.
        """
        return self.train_columns()

    # Factorized form ----------------------------------------------------------------------
    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user indices -> [B, H + 1]: with :meth:`item_embeddings`, the dot product is the
        decoder's pre-activation for (user, item), i.e. the unclipped predicted rating for the
        identity decoder (and the same ranking for any increasing decoder activation).

        Item-based: user u is decoder output unit u, so its vector is [V_u, b_u] and the item's
        is [code(R[:, i]), 1]; user-based swaps the roles.
        """
        users = users.long().to(self.inputs.device)
        return self._code(users) if self.based == "user" else self._unit(users)

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """[B] item indices -> [B, H + 1] (see :meth:`user_embeddings`)."""
        items = items.long().to(self.inputs.device)
        return self._code(items) if self.based == "item" else self._unit(items)

    def _code(self, rows: torch.Tensor) -> torch.Tensor:
        """[code(x_row), 1]: the encoder's output for an input row (eval mode: no dropout)."""
        with _eval_mode(self):
            code = self.encoder(self.inputs.index_select(0, rows))
        return torch.cat([code, code.new_ones(code.shape[0], 1)], dim=1)

    def _unit(self, columns: torch.Tensor) -> torch.Tensor:
        """[V_j, b_j]: the decoder's weights and bias for output unit j."""
        return torch.cat([self.decoder.weight[columns], self.decoder.bias[columns, None]], dim=1)

    # Prediction ---------------------------------------------------------------------------
    def _clip(self, values: torch.Tensor) -> torch.Tensor:
        bounds = self.rating_range
        return values if bounds is None else values.clamp(bounds[0], bounds[1])

    def _check_indices(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        users = torch.as_tensor(users, dtype=torch.long, device=self.inputs.device).reshape(-1)
        items = torch.as_tensor(items, dtype=torch.long, device=self.inputs.device).reshape(-1)
        if users.shape != items.shape:
            raise DataError(f"got {users.numel()} user indices but {items.numel()} item indices")
        for name, idx, n in (("user", users, self.index.num_users), ("item", items, self.index.num_items)):
            bad = (idx < 0) | (idx >= n)
            if bool(bad.any()):
                raise DataError(f"{name} index {int(idx[bad][0])} is out of range [0, {n}): "
                                f"the model knows {n} {name}s (its RatingIndex).")
        return users, items

    def _predict_indices(self, users: torch.Tensor, items: torch.Tensor, clip: bool) -> torch.Tensor:
        users, items = self._check_indices(users, items)
        rows, cols = (items, users) if self.based == "item" else (users, items)
        # Reconstruct each needed row once, then read the requested entries.
        unique_rows, inverse = torch.unique(rows, return_inverse=True)
        recon = self(self.inputs.index_select(0, unique_rows))
        out = recon[inverse, cols]
        if clip:
            out = self._clip(out)
        if self.cold_start == "global_mean":
            cold = ~self.row_has_data[rows] | ~self.col_has_data[cols]
            out = torch.where(cold, out.new_tensor(self.global_mean), out)
        return out

    @torch.no_grad()
    def predict_indices(self, users: Any, items: Any, clip: bool = True) -> torch.Tensor:
        """Predicted ratings [n] for dense (user, item) index pairs, in eval mode (no dropout).

        Out-of-range indices raise DataError; cold users/items follow ``cold_start``.
        """
        with _eval_mode(self):
            return self._predict_indices(torch.as_tensor(users), torch.as_tensor(items), clip)

    def predict(self, user_ids: Any, item_ids: Any, clip: bool = True) -> np.ndarray:
        """Predicted ratings [n] (float32) for raw (user_id, item_id) pairs.

        Raises DataError naming the first ids that are not in the training RatingIndex.
        """
        users = self.index.users(user_ids)
        items = self.index.items(item_ids)
        return self.predict_indices(users, items, clip).cpu().numpy()

    @torch.no_grad()
    def reconstruct(self, clip: bool = True, chunk_rows: int = 4096) -> torch.Tensor:
        """The full predicted matrix [num_users, num_items] (eval mode, cold policy applied)."""
        with _eval_mode(self):
            parts = [self(self.inputs[s:s + chunk_rows]) for s in range(0, self.num_rows, chunk_rows)]
        recon = torch.cat(parts)  # [rows, width]
        if clip:
            recon = self._clip(recon)
        if self.cold_start == "global_mean":
            cold = ~self.row_has_data[:, None] | ~self.col_has_data[None, :]
            recon = torch.where(cold, recon.new_tensor(self.global_mean), recon)
        return recon.T if self.based == "item" else recon

    @torch.no_grad()
    def recommend(self, user_ids: Any, k: int = 10, exclude_rated: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per user by predicted rating.

        Args:
            user_ids: raw user id(s); unknown ids raise DataError.
            k: items per user (capped at num_items).
            exclude_rated: skip items the user rated in the training matrix.

        Returns:
            ``(item_ids [n, k] raw ids, scores [n, k] float32)`` for the n users, best first. Scores are
            unclipped predictions (clipping would tie every rating above the maximum);
            slots beyond a user's number of unrated items have score -inf.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1; got {k}")
        k = min(int(k), self.index.num_items)
        users = torch.as_tensor(self.index.users(user_ids), device=self.inputs.device)
        scores = self.reconstruct(clip=False)[users]  # [n, num_items]
        if exclude_rated:
            rated = self.observed.T[users] if self.based == "item" else self.observed[users]
            scores = scores.masked_fill(rated, float("-inf"))
        top_scores, top_items = scores.topk(k, dim=1)
        return self.index.item_ids[top_items.cpu().numpy()], top_scores.cpu().numpy()


class _eval_mode:
    """Context manager: eval mode inside, the previous mode restored after."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.was_training = module, module.training

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)
