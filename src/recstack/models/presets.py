"""Ready-made MovieLens retrieval models: the deep-retrieval tutorial model and the
tuned configuration, as plain-dict configs a CLI can load from a file.

``build_retrieval_model(features, movies, **config)`` builds a two-tower model from
:class:`~recstack.models.towers.QueryTower` / :class:`~recstack.models.towers.CandidateTower`;
``build_and_train(config, features, train, movies)`` also trains it. The tutorial's model is
``tutorial_retrieval_config(layer_sizes)``; ``best_retrieval_config()`` is the configuration
selected on a validation slice of the training data (see its docstring and docs/results.md).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from ..layers.candidates import TowerCandidates
from ..core.columns import Columns
from ..core.errors import ConfigError
from ..core.exclusions import Exclusions
from ..metrics.factorized_top_k import FactorizedTopK
from ..training.optimizers import Adagrad
from ..tasks.retrieval import Retrieval
from ..training.history import History
from .movielens_features import MovieLensFeatures
from .towers import CandidateTower, QueryTower
from .two_tower import TwoTowerRetrieval

QUERY_INPUTS = ["user_id", "timestamp_bucket", "timestamp_norm"]
CANDIDATE_INPUTS = ["title_id", "title_tokens"]
SAMPLING_PROBABILITY = "title_sampling_probability"


def add_sampling_probability(train: Columns, num_titles: int | None = None) -> Columns:
    """Add ``title_sampling_probability`` = count(title_id) / n over ``train`` (vectorised)."""
    ids = train["title_id"].long()
    counts = torch.bincount(ids, minlength=num_titles or int(ids.max()) + 1).float()
    return Columns({**dict(train), SAMPLING_PROBABILITY: counts[ids] / ids.shape[0]})


def tutorial_retrieval_config(layer_sizes: Sequence[int] = (32,)) -> dict[str, Any]:
    """The deep-retrieval tutorial's model and training (batch 2048, Adagrad 0.1, 300 epochs)."""
    return {
        "layer_sizes": list(layer_sizes), "embedding_dim": 32, "use_timestamp": True, "use_text": True,
        "temperature": None, "reduction": "sum", "l2": 0.0, "logq_correction": False,
        "remove_accidental_hits": False, "num_hard_negatives": None,
        "learning_rate": 0.1, "batch_size": 2048, "epochs": 300, "optimizer": "adagrad",
    }


def best_retrieval_config() -> dict[str, Any]:
    """The tuned configuration: id-only towers (64-d user and title embeddings, no dense
    layers), in-batch softmax with logQ correction, temperature 0.07, mean reduction,
    accidental-hit removal, L2 1e-3 on the tables, Adam(3e-3), batch 1024, 20 epochs.

    Selected on a validation slice of the training data (``random_split(train, 0.9,
    seed=7)``; never the test split) by the smallest of three ratios: exclude-seen top-10
    and top-100 vs. EASE, tutorial-protocol top-100 vs. popularity. ``benchmarks/baselines.py
    --tune`` reruns the search; docs/results.md has the numbers.
    """
    return copy.deepcopy(_BEST)


_BEST: dict[str, Any] = {
    "layer_sizes": [], "embedding_dim": 64, "use_timestamp": False, "use_text": False,
    "temperature": 0.07, "reduction": "mean", "l2": 1e-3, "logq_correction": True,
    "remove_accidental_hits": True, "num_hard_negatives": None,
    "learning_rate": 3e-3, "batch_size": 1024, "epochs": 20, "optimizer": "adam",
}

_MODEL_KEYS = {"layer_sizes", "embedding_dim", "use_timestamp", "use_text", "temperature", "reduction",
               "l2", "logq_correction", "remove_accidental_hits", "num_hard_negatives"}
_TRAIN_KEYS = {"learning_rate", "batch_size", "epochs", "optimizer"}


def build_retrieval_model(features: MovieLensFeatures, movies: Columns, *, layer_sizes: Sequence[int] = (32,),
                          embedding_dim: int = 32, use_timestamp: bool = True, use_text: bool = True,
                          temperature: float | None = None, reduction: str = "sum", l2: float = 0.0,
                          logq_correction: bool = False, remove_accidental_hits: bool = False,
                          num_hard_negatives: int | None = None, train_metrics: bool = False,
                          exclude: Exclusions | None = None, query_key: str | None = None,
                          ks: Sequence[int] = (1, 5, 10, 50, 100)) -> TwoTowerRetrieval:
    """Two-tower model over the MovieLens towers, FactorizedTopK over ``movies`` (the catalogue rows).

    Args:
        features: fitted :class:`MovieLensFeatures` (sizes of the embedding tables).
        movies: encoded catalogue (``features.encode_movies(movies_df)``): [C] title ids are
            the candidate ids, so duplicated titles count once.
        layer_sizes ... num_hard_negatives: tower and loss settings (see the towers and Retrieval).
        train_metrics: update FactorizedTopK during training (TFRS default; off in the
            deep tutorial, which passes ``compute_metrics=not training``).
        exclude, query_key: "exclude seen" evaluation (query_key = "user_id").
        logq_correction: train with the logQ correction; the training columns must carry
            ``title_sampling_probability`` (see :func:`add_sampling_probability`): popular
            titles are over-represented among in-batch negatives, and without the
            correction the model learns to under-score them.
    """
    query = QueryTower(features.num_users, layer_sizes, embedding_dim,
                       features.num_timestamp_buckets if use_timestamp else None, use_timestamp, l2=l2)
    candidate = CandidateTower(features.num_titles, layer_sizes, embedding_dim,
                               features.num_tokens if use_text else None, use_text, l2=l2)
    inputs = {k: movies[k] for k in (CANDIDATE_INPUTS if use_text else CANDIDATE_INPUTS[:1])}
    metric = FactorizedTopK(TowerCandidates(candidate, inputs), candidate_ids=movies["title_id"], ks=ks,
                            exclude=exclude)
    task = Retrieval(metrics=metric, temperature=temperature, reduction=reduction,
                     remove_accidental_hits=remove_accidental_hits, num_hard_negatives=num_hard_negatives)
    return TwoTowerRetrieval(
        query, candidate, task,
        query_inputs=QUERY_INPUTS if use_timestamp else QUERY_INPUTS[:1],
        candidate_inputs=CANDIDATE_INPUTS if use_text else CANDIDATE_INPUTS[:1],
        candidate_id="title_id", query_key=query_key, train_metrics=train_metrics, deduplicate_candidates=True,
        sampling_probability=SAMPLING_PROBABILITY if logq_correction else None)


def make_optimizer(name: str, learning_rate: float):
    """Factory ``params -> optimizer``: "adagrad" (Keras defaults) or "adam"."""
    if name == "adagrad":
        return lambda params: Adagrad(params, lr=learning_rate)
    if name == "adam":
        return lambda params: torch.optim.Adam(params, lr=learning_rate)
    raise ConfigError(f"optimizer must be 'adagrad' or 'adam'; got {name!r}.")


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model kwargs, training kwargs) of a config dict; unknown keys are an error."""
    unknown = set(config) - _MODEL_KEYS - _TRAIN_KEYS
    if unknown:
        raise ConfigError(f"unknown retrieval config keys {sorted(unknown)}; known: "
                          f"{sorted(_MODEL_KEYS | _TRAIN_KEYS)}.")
    return ({k: v for k, v in config.items() if k in _MODEL_KEYS},
            {k: v for k, v in config.items() if k in _TRAIN_KEYS})


def build_and_train(config: dict[str, Any], features: MovieLensFeatures, train: Columns, movies: Columns, *,
                    validation_data: Columns | None = None, validation_freq: int = 1, seed: int = 0,
                    exclude: Exclusions | None = None, query_key: str | None = None,
                    verbose: bool = False, **fit_kwargs: Any) -> tuple[TwoTowerRetrieval, History]:
    """Build the model of ``config`` (e.g. :func:`best_retrieval_config`) and train it.

    Parameters are initialised from ``torch.manual_seed(seed)``; batches are shuffled
    with ``seed``. ``exclude``/``query_key`` configure exclusion-aware validation.

    Returns:
        (trained model, History).
    """
    model_kwargs, train_kwargs = split_config({**tutorial_retrieval_config(), **config})
    if model_kwargs.get("logq_correction") and SAMPLING_PROBABILITY not in train:
        train = add_sampling_probability(train, features.num_titles)
    torch.manual_seed(seed)
    model = build_retrieval_model(features, movies, exclude=exclude, query_key=query_key, **model_kwargs)
    history = model.fit(train, epochs=int(train_kwargs["epochs"]), batch_size=int(train_kwargs["batch_size"]),
                        optimizer=make_optimizer(train_kwargs["optimizer"], float(train_kwargs["learning_rate"])),
                        validation_data=validation_data, validation_freq=validation_freq,
                        validation_batch_size=4096, seed=seed, verbose=verbose, **fit_kwargs)
    return model, history


__all__ = ["add_sampling_probability", "best_retrieval_config", "build_and_train",
           "build_retrieval_model", "make_optimizer", "split_config", "tutorial_retrieval_config"]
