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

from ..core.errors import ConfigError


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
        from ..core.errors import suggest

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


def _metric_lines(metrics: dict[str, float], keys: list[str]) -> list[str]:
    return [f"{key.rsplit('/', 1)[-1]:<32}{metrics[key]:.4f}" for key in keys if key in metrics]


_TOP = [f"factorized_top_k/top_{k}_categorical_accuracy" for k in (1, 5, 10, 50, 100)]


def _deep_retrieval(options: ReproduceOptions) -> ReproductionResult:
    from ..datasets import load_movielens_100k
    from ..reproduce import deep_retrieval
    from ..reproduce.deep_retrieval import PUBLISHED_TOP_100

    layers = tuple(int(x) for x in options.extra.get("layer_sizes", (64, 32)))
    data = load_movielens_100k(options.data_dir, progress=options.progress == "bar")
    out = deep_retrieval(data, layer_sizes=layers, seed=options.seed,
                         epochs=int(options.extra.get("epochs", 300)), verbose=options.progress)
    published = PUBLISHED_TOP_100.get(layers)
    lines = [f"layer_sizes {list(layers)}; published top-100: {published if published is not None else '-'}"]
    return ReproductionResult(out["metrics"], "\n".join(lines + _metric_lines(out["metrics"], _TOP)),
                              {"top_100_curve": out["top_100_curve"]})


def _multitask(options: ReproduceOptions) -> ReproductionResult:
    from ..datasets import load_movielens_100k
    from ..reproduce import multitask
    from ..reproduce.multitask import PUBLISHED

    weights = (float(options.extra.get("rating_weight", 1.0)), float(options.extra.get("retrieval_weight", 1.0)))
    data = load_movielens_100k(options.data_dir, progress=options.progress == "bar")
    out = multitask(data, *weights, seed=options.seed, epochs=int(options.extra.get("epochs", 3)),
                    verbose=options.progress)
    top, rmse = PUBLISHED.get(weights, (None, None))
    lines = [f"weights (rating, retrieval) = {weights}; published top-100 {top}, RMSE {rmse}"]
    lines += _metric_lines(out["metrics"], [_TOP[-1], "root_mean_squared_error"])
    lines.append(f"predicted rating, user 42 / Dances with Wolves (1990): {out['predicted_rating']}")
    return ReproductionResult(out["metrics"], "\n".join(lines), {"predicted_rating": out["predicted_rating"]})


def _autorec(options: ReproduceOptions) -> ReproductionResult:
    from ..datasets import load_movielens_100k
    from ..reproduce import autorec
    from ..reproduce.autorec import PUBLISHED_RMSE

    data = load_movielens_100k(options.data_dir, progress=options.progress == "bar")
    out = autorec(data, seed=options.seed, epochs=int(options.extra.get("epochs", 25)), verbose=options.progress)
    text = (f"item-based AutoRec, d2l setting, random 90/10 split {options.seed}: test RMSE "
            f"{out['metrics']['root_mean_squared_error']:.4f} (d2l: {PUBLISHED_RMSE})")
    return ReproductionResult(out["metrics"], text, {"rmse_curve": out["rmse_curve"]})


register_reproduction("deep-retrieval", _deep_retrieval,
                      "TFRS 'Building deep retrieval models' (seed 000); --set layer_sizes=[128,64,32]")
register_reproduction("multitask", _multitask,
                      "TFRS 'Multi-task recommenders' (seed 001); --set rating_weight=1 --set retrieval_weight=0")
register_reproduction("autorec", _autorec, "d2l AutoRec (seed 004), item-based, random 90/10 split")

__all__ = ["ReproduceOptions", "Reproduction", "ReproductionResult", "get_reproduction", "register_reproduction",
           "reproduction_names"]
