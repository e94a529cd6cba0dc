"""Progress display for fit/evaluate: a tqdm bar per epoch with live metrics."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def short_name(key: str) -> str:
    """Compact metric names for the bar: 'factorized_top_k/top_100_categorical_accuracy' -> 'top100'."""
    tail = key.rsplit("/", 1)[-1]
    if tail.startswith("top_") and tail.endswith("_categorical_accuracy"):
        return "top" + tail[len("top_"):-len("_categorical_accuracy")]
    return tail.replace("root_mean_squared_error", "rmse")


class ProgressBar:
    """A per-epoch progress bar; silent when ``enabled`` is False.

    Live values refresh at most every ``refresh_seconds`` so computing them
    never dominates short steps.
    """

    def __init__(self, total: int, description: str, enabled: bool = True,
                 refresh_seconds: float = 0.5, unit: str = "batch"):
        self.enabled = enabled
        self.refresh_seconds = refresh_seconds
        self._last = 0.0
        self._bar = tqdm(total=total, desc=description, unit=unit, leave=True,
                         disable=not enabled, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int, values_fn) -> None:
        """Advance by ``n``; ``values_fn()`` returns the live metrics (called lazily)."""
        if not self.enabled:
            return
        self._bar.update(n)
        now = time.perf_counter()
        if now - self._last >= self.refresh_seconds or self._bar.n >= self._bar.total:
            self._last = now
            self._bar.set_postfix({short_name(k): _fmt(v) for k, v in values_fn().items()}, refresh=True)

    def close(self, values: dict[str, float] | None = None) -> None:
        if self.enabled and values is not None:
            self._bar.set_postfix({short_name(k): _fmt(v) for k, v in values.items()}, refresh=True)
        self._bar.close()


def _fmt(value: float) -> str:
    return f"{value:.4g}"
