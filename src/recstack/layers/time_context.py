"""Timestamp features of the TFRS deep-retrieval query tower, as one trainable layer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.errors import DataError, NotFittedError
from ..features.normalization import Normalization
from .embedding import Embedding


class TimestampFeatures(nn.Module):
    """A raw timestamp -> [bucket embedding, normalised value] (the tutorial's time features).

        b        = linspace(min t, max t, num_boundaries)                 (fitted)
        bucket   = #{j : b_j <= t}        (Keras Discretization, 0 .. num_boundaries)
        t_norm   = (t - mean t) / max(std t, 1e-7)                         (Keras Normalization)
        output   = concat[E[bucket] (d), t_norm (1)]                       [B, d + 1]

    Boundaries, mean and scale are float64 buffers (Unix times ~1e9 stay exact) filled by
    :meth:`fit`; they travel in the ``state_dict``. A call without timestamps (a query
    "now", e.g. ``recommend`` for a user) uses ``reference``: the latest fitted timestamp.

    Args:
        num_boundaries: bucket boundaries (1000 in the tutorial); num_boundaries + 1 buckets.
        embedding_dim: width d of the bucket embedding.
        l2: L2 coefficient on the embedding table.
    """

    def __init__(self, num_boundaries: int, embedding_dim: int, l2: float = 0.0):
        super().__init__()
        if num_boundaries < 1:
            raise ValueError(f"num_boundaries must be >= 1; got {num_boundaries}.")
        self.embedding = Embedding(num_boundaries + 1, embedding_dim, l2=l2)
        self.register_buffer("boundaries", torch.zeros(num_boundaries, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("scale", torch.zeros((), dtype=torch.float64))
        self.register_buffer("reference", torch.zeros((), dtype=torch.float64))
        self.output_dim = embedding_dim + 1

    def fit(self, timestamps: torch.Tensor | np.ndarray) -> "TimestampFeatures":
        """Fit boundaries, mean, scale and reference on timestamps [n] (seconds)."""
        t = np.asarray(torch.as_tensor(timestamps).cpu().numpy(), dtype=np.float64).reshape(-1)
        if t.size == 0 or not np.isfinite(t).all():
            raise DataError("TimestampFeatures.fit needs at least one timestamp and no NaN/inf values.")
        norm = Normalization().fit(t)
        self.boundaries.copy_(torch.from_numpy(np.linspace(t.min(), t.max(), self.boundaries.shape[0])))
        self.mean.fill_(norm.mean)
        self.scale.fill_(norm.std)
        self.reference.fill_(float(t.max()))
        return self

    def forward(self, timestamps: torch.Tensor | None, batch_size: int | None = None) -> torch.Tensor:
        """Timestamps [B] (any numeric dtype), or None with ``batch_size`` -> [B, d + 1]."""
        if float(self.scale) == 0.0:
            raise NotFittedError("TimestampFeatures is not fitted: call fit(train_timestamps) first.")
        if timestamps is None:
            if batch_size is None:
                raise ValueError("pass timestamps or batch_size.")
            t = self.reference.repeat(batch_size)
        else:
            t = timestamps.reshape(-1).to(torch.float64)
        buckets = torch.bucketize(t, self.boundaries, right=True)      # #{j : b_j <= t}
        normalised = ((t - self.mean) / self.scale).to(self.embedding.weight.dtype)
        return torch.cat([self.embedding(buckets), normalised[:, None]], dim=1)
