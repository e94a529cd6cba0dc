"""Normalization: standardize a scalar numeric feature to zero mean, unit variance."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.features.base import PREPROCESSING_LAYERS, PreprocessingLayer, to_float_array

__all__ = ["Normalization"]


@PREPROCESSING_LAYERS.register("Normalization")
class Normalization(PreprocessingLayer):
    """``y = (x - mean) / max(sqrt(variance), epsilon)`` (the Keras formula).

    Input: 1-D numeric batch [n] (list / ndarray / Series / tensor). Output:
    float32 tensor [n] (add ``.unsqueeze(-1)`` before an ``nn.Linear``).

    ``fit`` computes the mean and the population variance (ddof=0) in float64,
    and ``transform`` subtracts in float64 before casting: Keras does this in
    float32, which on Unix timestamps (~1e9, float32 spacing 64 s) loses most
    of the signal.

    Args:
        mean, variance: explicit statistics (both or neither); otherwise call ``fit``.
        epsilon: lower bound on the standard deviation (a constant feature maps to 0).
    """

    _state_hint = "mean=..., variance=..."

    def __init__(
        self, mean: float | None = None, variance: float | None = None, epsilon: float = 1e-7
    ) -> None:
        super().__init__()
        if (mean is None) != (variance is None):
            raise ConfigError("Normalization: pass both mean and variance, or neither (then call fit)")
        if not (float(epsilon) > 0 and math.isfinite(epsilon)):
            raise ConfigError(f"Normalization: epsilon must be a positive number, got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.mean: float | None = None
        self.variance: float | None = None
        if mean is not None and variance is not None:
            mean, variance = float(mean), float(variance)
            if not (math.isfinite(mean) and math.isfinite(variance)) or variance < 0:
                raise ConfigError(
                    f"Normalization: need finite mean and variance >= 0, got mean={mean!r}, variance={variance!r}"
                )
            self.mean, self.variance = mean, variance

    @property
    def is_fitted(self) -> bool:
        return self.mean is not None

    @property
    def std(self) -> float:
        """The divisor: ``max(sqrt(variance), epsilon)``."""
        self._require_fitted()
        assert self.variance is not None
        return max(math.sqrt(self.variance), self.epsilon)

    def fit(self, values: Any) -> Normalization:
        """Learn ``mean = x.mean()`` and ``variance = x.var()`` (population, float64)."""
        x = to_float_array(values, "Normalization", allow_inf=False)
        if len(x) == 0:
            raise DataError("Normalization.fit got no values")
        self.mean = float(np.mean(x))
        # Two-pass (subtract the mean first): exact enough for large offsets like timestamps.
        self.variance = float(np.mean(np.square(x - self.mean)))
        return self

    def transform(self, values: Any) -> torch.Tensor:
        """Values [n] -> float32 tensor [n]: ``(x - mean) / max(sqrt(variance), epsilon)``."""
        self._require_fitted()
        x = to_float_array(values, "Normalization")
        y = (x - self.mean) / self.std
        return self._output(y.astype(np.float32))

    def get_config(self) -> dict[str, Any]:
        return {"class": self.registered_name(), "mean": self.mean, "variance": self.variance, "epsilon": self.epsilon}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Normalization:
        return cls(mean=config["mean"], variance=config["variance"], epsilon=config["epsilon"])

    def extra_repr(self) -> str:
        if self.mean is None:
            return "unfitted"
        return f"mean={self.mean:.6g}, variance={self.variance:.6g}"
