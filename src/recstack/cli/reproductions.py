"""``recstack reproduce NAME``: the seed experiments, by name.

Each entry runs one tutorial reproduction exactly as its module in
:mod:`recstack.reproduce` defines it and returns its test metrics. Adding one is
one line::

    register_reproduction("deep-retrieval", run_deep_retrieval, "TFRS deep retrieval tutorial (seed 00x)")

where ``run_deep_retrieval(options: ReproduceOptions) -> ReproductionResult``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass
class ReproduceOptions:
    """What the command line passes to a reproduction."""

    data_dir: str | None = None
    seed: int = 0
    progress: str = "bar"  # bar | quiet | jsonl (recstack.training.progress)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReproductionResult:
    metrics: dict[str, float]
    text: str                                   # what to print (table, recommendations)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reproduction:
    name: str
    run: Callable[[ReproduceOptions], ReproductionResult]
    description: str


_REPRODUCTIONS: dict[str, Reproduction] = {}


def register_reproduction(name: str, run: Callable[[ReproduceOptions], ReproductionResult],
                          description: str) -> None:
    """Make ``recstack reproduce name`` run ``run(options)``."""
    _REPRODUCTIONS[name] = Reproduction(name, run, description)


def get_reproduction(name: str) -> Reproduction:
    if name not in _REPRODUCTIONS:
        from .config import suggest

        raise ConfigError(f"unknown reproduction {name!r}{suggest(name, list(_REPRODUCTIONS))}; "
                          f"available: {', '.join(sorted(_REPRODUCTIONS))}.")
    return _REPRODUCTIONS[name]


def reproduction_names() -> list[str]:
    return sorted(_REPRODUCTIONS)


def descriptions() -> dict[str, str]:
    return {name: r.description for name, r in sorted(_REPRODUCTIONS.items())}


# -- built in ----------------------------------------------------------------------------------------
def _basic_retrieval(options: ReproduceOptions) -> ReproductionResult:
    from ..datasets import load_movielens_100k
    from ..demo import PUBLISHED, metrics_table
    from ..reproduce import basic_retrieval

    data = load_movielens_100k(options.data_dir, progress=options.progress == "bar")
    result = basic_retrieval(data, seed=options.seed, verbose=options.progress, k=5)
    lines = [metrics_table(result.test_metrics, PUBLISHED), "", "Top 5 recommendations for user 42:"]
    lines += [f"  {rank}. {title}" for rank, title in enumerate(result.recommendations["42"], 1)]
    return ReproductionResult(result.test_metrics, "\n".join(lines),
                              {"recommendations": result.recommendations,
                               "epoch_seconds": result.epoch_seconds(), "source": str(data.source)})


register_reproduction("basic-retrieval", _basic_retrieval,
                      "TFRS 'Recommending movies: retrieval' (seed 002) on MovieLens 100K")
# Slots, one line each once their reproduction modules land in recstack.reproduce:
# register_reproduction("deep-retrieval", _deep_retrieval, "TFRS deep retrieval tutorial")
# register_reproduction("multitask", _multitask, "TFRS multi-task recommenders tutorial")
# register_reproduction("autorec", _autorec, "AutoRec (Sedhain et al. 2015) on MovieLens")

__all__ = ["ReproduceOptions", "Reproduction", "ReproductionResult", "get_reproduction", "register_reproduction",
           "reproduction_names"]
