"""Discretization: bucketize a numeric feature by sorted boundaries (Keras semantics)."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.features.base import PREPROCESSING_LAYERS, PreprocessingLayer, to_float_array

__all__ = ["Discretization"]


@PREPROCESSING_LAYERS.register("Discretization")
class Discretization(PreprocessingLayer):
    """Bucket index of each value: ``bucket = searchsorted(b, x, side="right")``.

    With sorted boundaries ``b`` (length B): ``x < b[0] -> 0``,
    ``b[i-1] <= x < b[i] -> i``, ``x >= b[-1] -> B``. Output range ``0..B``,
    ``num_buckets() = B + 1`` (use as ``nn.Embedding`` size).

    Input: 1-D numeric batch [n] (list / ndarray / Series / tensor); NaN raises
    DataError, +-inf fall in the first/last bucket. Output: LongTensor [n].
    Everything is computed in float64 (Unix timestamps ~1e9 stay exact).

    Args:
        bin_boundaries: explicit boundaries. Unsorted input is sorted with a warning
            (the TFRS deep-retrieval tutorial passes ``np.linspace(max, min, n)``).
        num_bins: for ``fit``: learn ``num_bins - 1`` quantile boundaries.
        epsilon: accepted for Keras compatibility; quantiles here are exact, so unused.
    """

    _state_hint = "bin_boundaries=[...]"

    def __init__(
        self,
        bin_boundaries: Sequence[float] | np.ndarray | None = None,
        num_bins: int | None = None,
        epsilon: float = 0.01,
    ) -> None:
        super().__init__()
        if bin_boundaries is not None and num_bins is not None:
            raise ConfigError(
                "Discretization: pass either bin_boundaries (fixed) or num_bins (learned by fit), not both"
            )
        if num_bins is not None and (
            isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1
        ):
            raise ConfigError(f"Discretization: num_bins must be an int >= 1, got {num_bins!r}")
        if not 0.0 < float(epsilon) < 1.0:
            raise ConfigError(f"Discretization: epsilon must be in (0, 1), got {epsilon!r}")
        self.num_bins = None if num_bins is None else int(num_bins)
        self.epsilon = float(epsilon)
        self._boundaries: np.ndarray | None = None
        if bin_boundaries is not None:
            self._boundaries = self._check_boundaries(bin_boundaries)

    @staticmethod
    def _check_boundaries(bin_boundaries: Any) -> np.ndarray:
        b = to_float_array(bin_boundaries, "Discretization bin_boundaries", allow_inf=False)
        if np.any(np.diff(b) < 0):
            # searchsorted on unsorted boundaries silently gives garbage buckets.
            warnings.warn(
                "Discretization: bin_boundaries are not sorted ascending; sorting them "
                f"(first values given: {b[:3].tolist()})",
                UserWarning,
                stacklevel=3,
            )
            b = np.sort(b)
        return b

    @classmethod
    def equal_width(cls, min_value: float, max_value: float, num_boundaries: int) -> Discretization:
        """Layer with ``np.linspace(min_value, max_value, num_boundaries)`` boundaries.

        Gives ``num_boundaries + 1`` buckets: below min, ``num_boundaries - 1`` equal
        slices of [min, max), and ``>= max``.
        """
        if isinstance(num_boundaries, bool) or not isinstance(num_boundaries, (int, np.integer)) or num_boundaries < 1:
            raise ConfigError(f"Discretization.equal_width: num_boundaries must be an int >= 1, got {num_boundaries!r}")
        if not (np.isfinite(min_value) and np.isfinite(max_value)) or min_value > max_value:
            raise ConfigError(
                f"Discretization.equal_width: need finite min_value <= max_value, got {min_value!r}, {max_value!r}"
            )
        return cls(bin_boundaries=np.linspace(float(min_value), float(max_value), int(num_boundaries)))

    @property
    def is_fitted(self) -> bool:
        return self._boundaries is not None

    @property
    def bin_boundaries(self) -> np.ndarray:
        """Sorted float64 boundaries, shape [B]."""
        self._require_fitted()
        assert self._boundaries is not None
        return self._boundaries.copy()

    def num_buckets(self) -> int:
        """B + 1: the number of distinct output indices."""
        self._require_fitted()
        assert self._boundaries is not None
        return len(self._boundaries) + 1

    def fit(self, values: Any) -> Discretization:
        """Learn quantile boundaries: ``np.quantile(values, [i / num_bins for i in 1..num_bins-1])``.

        Linear interpolation, float64. Repeated values can give repeated boundaries
        (empty buckets), as with Keras.
        """
        if self.num_bins is None:
            raise ConfigError(
                "Discretization.fit needs num_bins (e.g. Discretization(num_bins=10)); "
                "a layer built with bin_boundaries is already fixed"
            )
        x = to_float_array(values, "Discretization", allow_inf=False)
        if len(x) == 0:
            raise DataError("Discretization.fit got no values")
        quantiles = np.arange(1, self.num_bins) / self.num_bins
        self._boundaries = np.quantile(x, quantiles)
        return self

    def transform(self, values: Any) -> torch.Tensor:
        """Values [n] -> LongTensor [n] of bucket indices in ``0..B``."""
        self._require_fitted()
        x = to_float_array(values, "Discretization")
        buckets = np.searchsorted(self._boundaries, x, side="right")
        return self._output(buckets.astype(np.int64, copy=False))

    def get_config(self) -> dict[str, Any]:
        return {
            "class": self.registered_name(),
            "bin_boundaries": None if self._boundaries is None else self._boundaries.tolist(),
            "num_bins": self.num_bins,
            "epsilon": self.epsilon,
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Discretization:
        boundaries = config["bin_boundaries"]
        if boundaries is None:
            return cls(num_bins=config["num_bins"], epsilon=config["epsilon"])
        layer = cls(bin_boundaries=boundaries, epsilon=config["epsilon"])
        layer.num_bins = config["num_bins"]  # fitted from num_bins: keep it so refit works
        return layer

    def extra_repr(self) -> str:
        if self._boundaries is None:
            return f"num_bins={self.num_bins}, unfitted"
        return f"num_buckets={len(self._boundaries) + 1}"
