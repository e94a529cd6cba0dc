"""From a config to objects: the model (through its registered kind), the optimizer, the device,
and the options of ``model.fit``."""

from __future__ import annotations

from typing import Any

import torch

from ..core.columns import BatchSource, Columns
from ..core.errors import ConfigError
from ..core.id_lists import IdLists
from ..training.model import Model
from .config import ExperimentConfig
from .limits import check_memory
from .model_kinds import MODEL_KINDS, ModelContext
from .prepare import Prepared
from .preprocessing import Preprocessing


def model_context(config: ExperimentConfig, pre: Preprocessing, prepared: Prepared | None,
                  has_rating: bool, has_weight: bool, histories: IdLists | None = None) -> ModelContext:
    """The builder's context: from the prepared data (a new run), or from a run folder
    (``prepared`` None; ``histories``: its histories.pt)."""
    exclude = None
    if prepared is not None and config.evaluation.validation_protocol == "exclude-seen":
        exclude = prepared.seen_train
    return ModelContext(
        num_users=pre.num_users, num_items=pre.num_items, catalogue=pre.catalogue(), tasks=config.tasks,
        user_features=pre.feature_spec("user"), item_features=pre.feature_spec("item"),
        feature_tables=prepared.tables if prepared is not None else None, ks=tuple(config.evaluation.ks),
        validation_protocol=config.evaluation.validation_protocol, exclude=exclude, has_rating=has_rating,
        has_weight=has_weight, train_metrics=config.training.train_metrics,
        train=prepared.train if prepared is not None else None,
        timestamps=prepared.timestamps if prepared is not None else None,
        histories=prepared.histories_before_test if prepared is not None else histories)


def build_model(config: ExperimentConfig, ctx: ModelContext) -> Model:
    """Check the kind's memory estimate against the machine, seed torch with ``config.seed`` and call
    the kind's builder."""
    kind = MODEL_KINDS.get(config.model.kind)
    if kind.memory is not None:  # before anything is allocated: a model past memory is refused, not attempted
        check_memory(kind.name, kind.memory(ctx, config.model.params))
    torch.manual_seed(config.seed)
    model = kind.builder(ctx, config.model.params)
    if not isinstance(model, Model):
        raise ConfigError(f"the builder of model kind {kind.name!r} returned {type(model).__name__}, "
                          "not a recstack.Model.")
    needed = ("score_items",) if kind.sequential else ("user_embeddings", "item_embeddings")
    for name in needed:
        if not callable(getattr(model, name, None)):
            raise ConfigError(f"model kind {kind.name!r}: {type(model).__name__} lacks {name}(...) "
                              "(see the builder contract in recstack.experiment.model_kinds).")
    return model


def make_optimizer(config: ExperimentConfig, model: Model) -> torch.optim.Optimizer:
    o = config.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"model kind {config.model.kind!r} has no trainable parameters.")
    sparse = any(getattr(m, "sparse", False) for m in model.modules() if isinstance(m, torch.nn.Embedding))
    if sparse and (o.name in ("adam", "adamw") or o.weight_decay or o.momentum):
        raise ConfigError("sparse embedding gradients (model.sparse_gradients) need optimizer adagrad or sgd "
                          "without weight_decay or momentum (those would touch every row each step).")
    if o.name == "adagrad":
        from ..training.optimizers import Adagrad

        return Adagrad(params, lr=o.learning_rate, weight_decay=o.weight_decay, fused=not sparse)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.learning_rate, momentum=o.momentum, weight_decay=o.weight_decay)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was requested but torch sees no CUDA device; use device: cpu or auto.")
    return torch.device(name)


def training_source(model: Model, train: Columns) -> BatchSource:
    """What ``model`` trains on: its ``training_data(train)`` (AutoRec: the rows of its rating
    matrix) when it defines one, else the interaction rows."""
    training_data = getattr(model, "training_data", None)
    return training_data(train) if callable(training_data) else train


def fit_options(config: ExperimentConfig) -> dict[str, Any]:
    """The config's ``model.fit`` keyword arguments: epochs, batch size, shuffling (seeded with
    ``config.seed``), validation cadence and batch size, autocast precision, gradient clipping."""
    t = config.training
    return {"epochs": t.epochs, "batch_size": t.batch_size, "shuffle": t.shuffle, "seed": config.seed,
            "validation_freq": t.validation_freq, "validation_batch_size": config.evaluation.batch_size,
            "autocast_dtype": torch.bfloat16 if t.precision == "bf16" else None,
            "clip_grad_norm": t.clip_grad_norm or None}


__all__ = ["build_model", "fit_options", "make_optimizer", "model_context", "resolve_device", "training_source"]
