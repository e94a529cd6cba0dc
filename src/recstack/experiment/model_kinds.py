"""The model-kind registry: ``model.kind`` in a config -> a builder function.

Adding a model to ``recstack train`` is one call::

    @dataclass
    class MyParams:                 # the hyperparameters allowed under `model:` (validated, typed)
        embedding_dim: int = 32

    def build_my_model(ctx: ModelContext, params: MyParams) -> recstack.Model: ...

    register_model_kind("my_model", build_my_model, MyParams, "one-line description")

The kinds live in one :class:`recstack.core.registry.Registry`, ``MODEL_KINDS``
(``MODEL_KINDS.get(name)``, ``MODEL_KINDS.names()``).

This module holds the contract, the context and the kinds every other one builds on (two_tower
with its history option, popularity, EASE: params, checks, memory bounds, builders); AutoRec, the
sequential, collaborative-filtering, iALS, item-KNN and ensemble kinds live in their own modules
(``*_kind.py``, ``cf_kinds``, ``sequential_kinds``), registered lazily below.

Builder contract
----------------
``builder(ctx, params)`` returns a :class:`recstack.Model` that

* trains on :class:`recstack.Columns` with ``user`` and ``item`` (LongTensor ids from
  the run's vocabularies, 0 = unknown), ``query_key`` (LongTensor, one value per
  distinct raw user: per-user metrics) and, when the data has them, ``rating`` and
  ``weight`` (float32) and ``timestamp`` (float64 seconds). Gradient-trained kinds are trained by ``model.fit`` with the
  config's optimizer; kinds registered with ``gradient_trained=False`` get one
  ``model.fit(train_columns)`` call (closed form: no optimizer, no epochs, no checkpoints);
* implements ``user_embeddings(users [B]) -> [B, d]`` and ``item_embeddings(items [B]) -> [B, d]``
  (score = dot product); ``recommend`` and ``similar`` use only these. A model whose queries
  depend on per-interaction context (e.g. the time) also implements ``query_embeddings(batch)
  -> [B, d]``; the evaluation protocols then score each test row with its own context;
* may define ``training_data(train: Columns) -> BatchSource`` to train on something other
  than the interaction rows (AutoRec: the rows of its rating matrix); validation and test
  data stay interaction rows;
* keeps everything it learns in its ``state_dict`` (parameters or persistent buffers) with
  shapes that depend on ``ctx`` alone: a saved run is reloaded by calling the builder again
  with ``ctx.train = None`` and ``load_state_dict(recstack.core.io.load_tensors(model.pt))``.
  Closed-form models must therefore allocate their buffers at full size in the builder;
* is built from ``ctx`` only (the caller seeds torch before the call, so initialisation
  is reproducible); per-epoch validation metrics come from the model's own Task metrics,
  configured from ``ctx.ks``, ``ctx.exclude`` and ``ctx.validation_protocol`` (the next-item
  validation protocols are computed by the run itself, see :mod:`recstack.experiment.next_item`).

Next-item protocols
-------------------
Every kind is evaluated by ``next-item`` (:mod:`recstack.experiment.next_item`): a model with
``score_items(histories [B, L]) -> [B, V]`` ranks from the history (sequential kinds); a kind
registered with ``history_query(model, histories: IdLists) -> [B, d]`` turns the user's earlier
items into a query for ``item_embeddings`` (EASE: their multi-hot row); any other model scores
the user, ``user_embeddings(users)``. A kind whose models read histories in some configurations
only (``two_tower`` with ``model.user_history``) registers ``history_query`` and gives its models a
``reads_histories`` attribute; a model whose ``reads_histories`` is False scores users. Kinds registered with ``sequential=True`` read histories
only: they implement ``score_items`` (and, for ``recommend --user``, read ``ctx.histories``)
instead of ``user_embeddings``, and are evaluated with the next-item protocols only.

The seed experiments map onto these kinds: basic retrieval, deep retrieval (``two_tower``
with ``timestamp_buckets`` and an item text table) and multi-task (``two_tower`` with a
rating task) are ``two_tower`` configurations; AutoRec is its own kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..core.columns import Columns
from ..core.errors import ConfigError
from ..core.exclusions import Exclusions
from ..core.id_lists import IdLists
from ..core.registry import Registry
from ..training.model import Model
from .limits import (
    MAX_SEQUENCE_LENGTH,
    MAX_TIME_BUCKETS,
    MAX_WIDTH,
    WIDTH_WHY,
    MemoryEstimate,
    bound,
    width_problems,
)


@dataclass
class FeatureSpec:
    """Shapes of one side's feature tables (see :class:`~recstack.models.feature_tower.FeatureTower`)."""

    categorical_sizes: list[int] = field(default_factory=list)
    num_numeric: int = 0
    text_vocab_size: int = 0
    text_length: int = 0

    @property
    def empty(self) -> bool:
        return not self.categorical_sizes and not self.num_numeric and not self.text_vocab_size


@dataclass
class ModelContext:
    """Everything a builder may use.

    Attributes:
        num_users, num_items: id vocabulary sizes (OOV index 0 included): embedding rows.
        catalogue: [C] item ids that can be recommended (1 .. num_items - 1).
        user_features, item_features: feature-table shapes (empty specs when none).
        feature_tables: {"user"/"item": {"categorical"/"numeric"/"text": tensor}} to load
            into the towers (None when rebuilding a saved run: the state_dict has them).
        tasks: the config's tasks section (weights, retrieval loss options).
        ks: FactorizedTopK cut-offs.
        validation_protocol: "all-items" or "exclude-seen" (per-epoch validation metrics).
        exclude: seen items per query key for "exclude-seen" validation (None otherwise).
        has_rating, has_weight: whether batches carry ``rating`` / ``weight``.
        train_metrics: compute retrieval metrics during training too.
        train: encoded training rows (None when rebuilding a saved run).
        timestamps: float64 [n] interaction times to fit time features on (the training rows, or
            all rows with ``features.vocabulary: all``); None without a timestamp column or when
            rebuilding a saved run (fitted values are buffers in the state_dict).
        histories: per user id, the items before the test split in time order (the run folder's
            histories.pt): what a sequential model reads for ``recommend --user``. None when the
            run folder has none.
    """

    num_users: int
    num_items: int
    catalogue: torch.Tensor
    tasks: Any  # recstack.experiment.config.TasksConfig (the config imports this module, not the reverse)
    user_features: FeatureSpec = field(default_factory=FeatureSpec)
    item_features: FeatureSpec = field(default_factory=FeatureSpec)
    feature_tables: dict[str, dict[str, torch.Tensor]] | None = None
    ks: tuple[int, ...] = (1, 5, 10, 50, 100)
    validation_protocol: str = "all-items"
    exclude: Exclusions | None = None
    has_rating: bool = False
    has_weight: bool = False
    train_metrics: bool = False
    train: Columns | None = None
    timestamps: torch.Tensor | None = None
    histories: IdLists | None = None


Builder = Callable[[ModelContext, Any], Model]
#: ``check(params) -> problems``: one message per invalid hyperparameter, with its dotted key.
Check = Callable[[Any], list[str]]
#: ``memory(ctx, params) -> MemoryEstimate``: what the built model will need, before it is built.
Memory = Callable[[ModelContext, Any], MemoryEstimate]
#: ``history_query(model, histories) -> [B, d]``: queries of B histories (IdLists rows) for ``item_embeddings``.
HistoryQuery = Callable[[Model, IdLists], torch.Tensor]


@dataclass(frozen=True)
class ModelKind:
    name: str
    builder: Builder
    params: type
    description: str = ""
    gradient_trained: bool = True
    predicts_ratings: bool = False
    check: Check | None = None
    memory: Memory | None = None
    sequential: bool = False
    history_query: HistoryQuery | None = None
    fit_reports_progress: bool = False


#: The model-kind table: ``model.kind`` in a config -> its :class:`ModelKind`.
#: The one table of model kinds. The sequential kinds, the collaborative-filtering kinds (multvae,
#: lightgcn), iALS (ials), item-KNN (itemknn) and the ensemble (ensemble) live in their own modules, which register them when
#: first needed (lazy entries, so this module never imports them back).
MODEL_KINDS: Registry[ModelKind] = Registry("model kind", lazy={
    **{name: "recstack.experiment.sequential_kinds" for name in ("sasrec", "gru4rec", "transitions")},
    **{name: "recstack.experiment.cf_kinds" for name in ("multvae", "lightgcn")},
    "autorec": "recstack.experiment.autorec_kind",
    "ials": "recstack.experiment.ials_kind",
    "itemknn": "recstack.experiment.itemknn_kind",
    "ensemble": "recstack.experiment.ensemble_kind"})


def register_model_kind(name: str, builder: Builder, params: type | None = None, description: str = "",
                        gradient_trained: bool = True, replace: bool = False,
                        predicts_ratings: bool = False, check: Check | None = None,
                        memory: Memory | None = None, sequential: bool = False,
                        history_query: HistoryQuery | None = None, fit_reports_progress: bool = False) -> ModelKind:
    """Make ``model.kind: name`` available to configs (see the module docstring for the contract).

    Args:
        name: the kind's name in configs (recorded in every run folder's config.yaml).
        builder: ``builder(ctx: ModelContext, params) -> recstack.Model``.
        params: a dataclass of hyperparameters (every field needs a default); the keys under
            ``model:`` besides ``kind`` are validated against it. None: no hyperparameters.
        description: one line for ``recstack train --help``.
        gradient_trained: False for closed-form models (one ``fit(train)`` call).
        replace: allow re-registering an existing name.
        predicts_ratings: a rating model: its test loss and RMSE (``model.evaluate`` on the test
            rows) are always reported, whatever ``tasks.rating.weight`` says.
        check: ``check(params) -> [problem, ...]``, run when the config is parsed (before any data
            is read): value ranges the types cannot express, e.g. widths within
            :data:`~recstack.experiment.limits.MAX_WIDTH`.
        memory: ``memory(ctx, params) -> MemoryEstimate``, run before the builder; a model that
            would not fit in the machine's memory is refused with the estimate.
        sequential: the model ranks items given a history (``score_items``), trains on time-ordered
            interactions and is evaluated with the next-item protocols only (see the module docstring).
        history_query: how a non-sequential kind turns histories into queries for the next-item
            protocols and ``recommend --history`` (None: it scores users, not histories).
        fit_reports_progress: a closed-form kind whose ``fit(train, reporter=...)`` takes the run's
            :class:`~recstack.experiment.reporter.Reporter` to show its own progress (the
            ensemble, which trains its members one after the other).
    """
    if name in MODEL_KINDS.loaded() and not replace:
        raise ConfigError(f"model kind {name!r} is already registered; pass replace=True to override it.")
    kind = ModelKind(name, builder, params or _NoParams, description, gradient_trained, predicts_ratings, check,
                     memory, sequential, history_query, fit_reports_progress)
    return MODEL_KINDS.register(name, kind)


@dataclass
class _NoParams:
    pass


# -- built-in kinds --------------------------------------------------------------------------------
@dataclass
class UserHistoryParams:
    """``model.user_history`` of ``two_tower``: the user tower also reads the user's training items.

    ``pooling``: ``mean`` of their embeddings, or ``attention`` (softmax weights from a learned
    query vector, over real positions only). ``max_length``: the latest items kept per user (by
    timestamp when the data has one). ``use_id``: keep the user id embedding beside the pooled
    history (false: a history-only tower, the same for known and new users). ``combine``:
    ``concat`` (the history is a part of its own, so a tower without layer_sizes gets a Dense
    projection) or ``sum`` (added to the id embedding). ``item_table``: ``shared`` pools the item
    tower's id embeddings, ``own`` a table of its own.
    """

    pooling: Literal["mean", "attention"] = "mean"
    max_length: int = 50
    use_id: bool = True
    combine: Literal["concat", "sum"] = "concat"
    item_table: Literal["shared", "own"] = "shared"


@dataclass
class TwoTowerParams:
    """Hyperparameters of the generic feature-aware two-tower model.

    ``layer_sizes``: MLP widths on top of each tower's concatenated parts (empty: a
    linear projection when there are features, nothing otherwise).
    ``rating_layer_sizes``: hidden widths of the rating head (used when tasks.rating.weight > 0).
    ``timestamp_buckets``: add the interaction time to the user tower (bucket embedding over this
    many equal-width boundaries + the normalised time, as in the TFRS deep-retrieval tutorial,
    which uses 1000); needs ``data.columns.timestamp``. 0 = no time feature.
    ``sparse_gradients``: user and item id embeddings get sparse gradients (a step touches only
    the batch's rows: for catalogues of 10^5+ items); needs l2 = 0 and optimizer adagrad or sgd.
    ``user_history``: the user tower pools the user's history (:class:`UserHistoryParams`); null
    = off. In training each example's own item is masked out of its user's history.
    """

    embedding_dim: int = 32
    layer_sizes: list[int] = field(default_factory=list)
    activation: str = "relu"
    l2: float = 0.0
    use_user_features: bool = True
    use_item_features: bool = True
    rating_layer_sizes: list[int] = field(default_factory=lambda: [64, 32])
    timestamp_buckets: int = 0
    sparse_gradients: bool = False
    user_history: UserHistoryParams | None = None


def check_two_tower(p: TwoTowerParams) -> list[str]:
    problems = [bound("model.embedding_dim", p.embedding_dim, 1, MAX_WIDTH, WIDTH_WHY),
                bound("model.timestamp_buckets", p.timestamp_buckets, 0, MAX_TIME_BUCKETS,
                      "each bucket is an embedding row; the TFRS tutorial uses 1,000"),
                _activation_problem("model.activation", p.activation)]
    if p.l2 < 0:
        problems.append(f"model.l2: must be >= 0, got {p.l2}")
    if p.sparse_gradients and p.l2:
        problems.append("model.sparse_gradients needs model.l2: 0 (the L2 penalty's gradient touches every row)")
    h = p.user_history
    if h is not None:
        problems.append(bound("model.user_history.max_length", h.max_length, 1, MAX_SEQUENCE_LENGTH,
                              "each user stores this many item ids; 20-200 is usual"))
        if not h.use_id and h.combine == "sum":
            problems.append("model.user_history.combine: 'sum' adds the history to the user id embedding, but "
                            "use_id is false; use combine: concat (or use_id: true)")
    return [x for x in problems if x] + width_problems("model.layer_sizes", p.layer_sizes) + \
        width_problems("model.rating_layer_sizes", p.rating_layer_sizes)


def two_tower_memory(ctx: ModelContext, p: TwoTowerParams) -> MemoryEstimate:
    """Float32 embedding rows (ids, categorical values, text tokens, time buckets) x embedding_dim,
    dense layers, and the int64 feature tables; parameters count four times (weights, gradients,
    up to two optimizer states)."""
    d = p.embedding_dim
    params = tables = rows = 0
    sides = ((ctx.num_users, ctx.user_features if p.use_user_features else FeatureSpec(), p.timestamp_buckets),
             (ctx.num_items, ctx.item_features if p.use_item_features else FeatureSpec(), 0))
    for num_ids, spec, buckets in sides:
        side_rows = num_ids + sum(spec.categorical_sizes) + spec.text_vocab_size + (buckets + 1 if buckets else 0)
        rows += side_rows
        params += side_rows * d
        parts = 1 + len(spec.categorical_sizes) + (spec.num_numeric > 0) + (spec.text_vocab_size > 0) + (buckets > 0)
        widths = [parts * d + (buckets > 0), *(p.layer_sizes or ([d] if parts > 1 else []))]
        params += sum(a * b for a, b in zip(widths, widths[1:])) + spec.num_numeric * d
        tables += num_ids * (8 * len(spec.categorical_sizes) + 4 * spec.num_numeric
                             + (8 * spec.text_length if spec.text_vocab_size else 0))
    h = p.user_history
    if h is not None:   # its own item table (or none: shared), no user table without use_id, the history table
        extra = (ctx.num_items if h.item_table == "own" else 0) - (0 if h.use_id else ctx.num_users)
        rows += extra
        params += extra * d + d + (d * max([d, *p.layer_sizes[:1]]) if h.combine == "concat" and h.use_id else 0)
        tables += 8 * ctx.num_users * h.max_length
    return MemoryEstimate(16 * params + tables,
                          f"{rows:,} embedding rows (ids and feature values) x embedding_dim {d}, float32, with "
                          "gradients and optimizer state")


def _activation_problem(key: str, name: str) -> str | None:
    from ..layers import make_activation

    try:
        make_activation(name)
    except ValueError as exc:
        return f"{key}: {exc}"
    return None


def build_two_tower(ctx: ModelContext, p: TwoTowerParams) -> Model:
    from ..models.feature_tower import FeatureTower, FeatureTwoTower

    if p.timestamp_buckets and ctx.train is not None and ctx.timestamps is None:
        raise ConfigError("model.timestamp_buckets uses the interaction time, but the data has no timestamp "
                          "column; map one with data.columns.timestamp or set model.timestamp_buckets: 0.")
    user_spec = ctx.user_features if p.use_user_features else FeatureSpec()
    item_spec = ctx.item_features if p.use_item_features else FeatureSpec()
    h = p.user_history
    history: dict[str, Any] = {} if h is None else {
        "history_items": ctx.num_items, "history_length": h.max_length, "history_pooling": h.pooling,
        "history_combine": h.combine, "use_id": h.use_id}
    towers = []
    for num_ids, spec, buckets, extra in ((ctx.num_users, user_spec, p.timestamp_buckets, history),
                                          (ctx.num_items, item_spec, 0, {})):
        towers.append(FeatureTower(num_ids, p.embedding_dim, spec.categorical_sizes, spec.num_numeric,
                                   spec.text_vocab_size, spec.text_length, p.layer_sizes, p.activation, p.l2,
                                   timestamp_buckets=buckets, sparse_gradients=p.sparse_gradients, **extra))
    query, candidate = towers
    if h is not None:
        if h.item_table == "shared":
            assert query.history is not None and candidate.id_embedding is not None
            query.history.share_embedding(candidate.id_embedding)
        if ctx.train is not None:
            from ..models.user_history import latest_items_table

            times = ctx.train["timestamp"] if "timestamp" in ctx.train else None
            query.set_history_table(latest_items_table(ctx.train["user"], ctx.train["item"], times,
                                                       ctx.num_users, h.max_length))
    if p.timestamp_buckets and ctx.timestamps is not None:
        query.fit_timestamps(ctx.timestamps)
    if ctx.feature_tables is not None:
        for side, tower, spec in (("user", query, user_spec), ("item", candidate, item_spec)):
            tables = ctx.feature_tables.get(side, {})
            if not spec.empty and tables:
                tower.set_feature_tables(**tables)
    r = ctx.tasks.retrieval
    model = FeatureTwoTower(
        query, candidate, ctx.catalogue, retrieval_weight=r.weight, rating_weight=ctx.tasks.rating.weight,
        rating_layer_sizes=p.rating_layer_sizes, temperature=r.temperature,
        remove_accidental_hits=r.remove_accidental_hits, num_hard_negatives=r.num_hard_negatives,
        reduction=r.reduction, ks=ctx.ks, exclude=ctx.exclude,
        per_user_metrics=ctx.validation_protocol == "exclude-seen", use_weight=ctx.has_weight,
        train_metrics=ctx.train_metrics, activation=p.activation, logq_correction=r.logq_correction,
        sampled_negatives=r.sampled_negatives)
    if r.sampled_negatives and ctx.train is not None:
        model.set_negative_distribution(ctx.train["item"], r.sampled_negatives_alpha)
    if r.logq_correction and ctx.train is not None:
        model.set_item_probability(ctx.train["item"])
    return model


@dataclass
class PopularityParams:
    """``tie_break``: equal counts rank by item id in the scores themselves (see ``Popularity``)."""

    tie_break: bool = True


def build_popularity(ctx: ModelContext, p: PopularityParams) -> Model:
    from ..models.baselines import Popularity

    model = Popularity(ctx.num_items, tie_break=p.tie_break, **_baseline_kwargs(ctx))
    model.counts = torch.zeros(ctx.num_items, dtype=torch.float64)  # full size: see the builder contract
    return model


@dataclass
class EASEParams:
    """``l2``: the ridge penalty λ of EASE's closed form (tune it on validation data)."""

    l2: float = 500.0


def check_ease(p: EASEParams) -> list[str]:
    return [] if p.l2 > 0 else [f"model.l2: must be > 0 (the ridge penalty keeps the item-item system "
                                f"solvable), got {p.l2}"]


def ease_memory(ctx: ModelContext, p: EASEParams) -> MemoryEstimate:
    """Float64 dense user x item matrix, item x item weights and the solve's item x item workspace."""
    u, i = ctx.num_users, ctx.num_items
    return MemoryEstimate(8 * (u * i + 3 * i * i),
                          f"a dense {u:,} x {i:,} user-item matrix and {i:,} x {i:,} item-item matrices, float64")


def build_ease(ctx: ModelContext, p: EASEParams) -> Model:
    from ..models.baselines import EASE

    model = EASE(ctx.num_items, ctx.num_users, l2=p.l2, **_baseline_kwargs(ctx))
    model.X = torch.zeros(ctx.num_users, ctx.num_items, dtype=model.dtype)
    model.B = torch.zeros(ctx.num_items, ctx.num_items, dtype=model.dtype)
    return model


def popularity_history_query(model: Model, histories: IdLists) -> torch.Tensor:
    """[B, 1] ones: popularity scores every history the same (its item embeddings are the counts)."""
    return torch.ones(histories.num_rows, 1, dtype=torch.float64)


def ease_history_query(model: Model, histories: IdLists) -> torch.Tensor:
    """[B, V] the multi-hot rows of the histories' items: EASE's x_u, from the history given
    (for the test item of a leave-one-out split: the training items and the validation item)."""
    rows, ids = histories.pairs()
    x = torch.zeros(histories.num_rows, model.num_items, dtype=model.dtype)
    known = (ids > 0) & (ids < model.num_items)
    x[torch.from_numpy(rows[known]), torch.from_numpy(ids[known])] = 1.0
    return x


def two_tower_history_query(model: Model, histories: IdLists) -> torch.Tensor:
    """[B, d] the user tower's queries of the histories' latest ``max_length`` items, as for a user
    unseen in training (id 0); only for ``model.user_history`` (see ``reads_histories``)."""
    from ..models.user_history import padded_latest

    tower = model.query_tower
    return model.history_query_embeddings(padded_latest(histories, tower.history_length,
                                                        tower.history.embedding.num_embeddings))


def _baseline_kwargs(ctx: ModelContext) -> dict[str, Any]:
    return {"candidate_ids": ctx.catalogue, "exclude": ctx.exclude, "user_column": "user", "item_column": "item",
            "query_key": "query_key", "ks": ctx.ks}


register_model_kind("two_tower", build_two_tower, TwoTowerParams,
                    "two-tower retrieval over id embeddings + optional user/item features (rating head optional)",
                    check=check_two_tower, memory=two_tower_memory, history_query=two_tower_history_query)
register_model_kind("popularity", build_popularity, PopularityParams,
                    "most-interacted items first (closed form)", gradient_trained=False,
                    memory=lambda ctx, p: MemoryEstimate(8 * ctx.num_items, f"{ctx.num_items:,} float64 counts"),
                    history_query=popularity_history_query)
register_model_kind("ease", build_ease, EASEParams, "EASE linear item-item autoencoder (closed form)",
                    gradient_trained=False, check=check_ease, memory=ease_memory, history_query=ease_history_query)

__all__ = ["EASEParams", "FeatureSpec", "HistoryQuery", "MODEL_KINDS", "ModelContext", "ModelKind",
           "PopularityParams", "TwoTowerParams", "UserHistoryParams", "ease_history_query",
           "popularity_history_query", "register_model_kind", "two_tower_history_query"]
