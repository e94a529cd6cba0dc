"""Task base class: a loss layer over model outputs that also owns metrics."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ..metrics.base import Metric


class Task(nn.Module):
    """A loss computed from embeddings or predictions, plus the metrics it updates.

    Metrics are held in a plain list (not registered as submodules) so that a
    metric referencing a tower does not duplicate its parameters in the model's
    ``state_dict``. :class:`recstack.Model` collects every task's metrics.
    """

    def __init__(self, metrics: Metric | Iterable[Metric] | None = None,
                 batch_metrics: Metric | Iterable[Metric] | None = None):
        super().__init__()
        self._metrics: list[Metric] = _as_list(metrics)
        self._batch_metrics: list[Metric] = _as_list(batch_metrics)

    @property
    def metrics(self) -> list[Metric]:
        """All metrics this task updates (factorized first, then batch metrics)."""
        return self._metrics + self._batch_metrics


def _as_list(metrics: Metric | Iterable[Metric] | None) -> list[Metric]:
    if metrics is None:
        return []
    if isinstance(metrics, Metric):
        return [metrics]
    out = list(metrics)
    for m in out:
        if not isinstance(m, Metric):
            raise TypeError(f"Expected recstack.metrics.Metric objects; got {type(m).__name__}.")
    return out
