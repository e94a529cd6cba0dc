"""The sequential model kinds: ``sasrec``, ``gru4rec`` (next-item retrieval over a history encoder)
and ``transitions`` (the item-to-item baseline: "users who had X next had Y").

They train on each user's training interactions in time order (equal timestamps keep file
order), built from the run's interaction rows by :meth:`HistoryRetrieval.training_data`, and
rank items given a history (``score_items``), which the next-item protocols
(:mod:`recstack.experiment.next_item`) and ``recstack recommend`` call. An empty history (a
user the run has no items for, or an ad-hoc history of unknown items) ranks by training
popularity. The stored histories ``recommend --user`` reads come from ``ctx.histories`` (the
run folder's histories.pt), never from the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..core.columns import Columns
from ..core.errors import ConfigError, DataError
from ..core.id_lists import IdLists
from ..datasets.sequences import Histories, build_histories, targets_after, training_sequences
from ..layers.item_side_features import ItemSideFeatures
from ..layers.sequence import GRU4RecEncoder, SASRecEncoder, SequenceEncoder
from ..models.sequential import SequentialRetrieval
from ..models.transitions import ItemTransitions
from ..training.history import History
from ..training.model import Model
from .limits import MAX_NEGATIVES, MAX_SEQUENCE_LENGTH, MAX_WIDTH, WIDTH_WHY, MemoryEstimate, bound
from .model_kinds import ModelContext, _activation_problem, register_model_kind

#: Transformer blocks / GRU layers a config may ask for (published models use 1-8).
MAX_DEPTH = 64


def interaction_histories(rows: Columns, num_items: int) -> Histories:
    """Per user, the items of ``rows`` (``user``, ``item``, ``timestamp``) in time order, equal
    timestamps in row order."""
    if "timestamp" not in rows:
        raise ConfigError("the sequential model kinds order each user's interactions by time: map the timestamp "
                          "column with data.columns.timestamp.")
    return build_histories(rows["user"], rows["item"], rows["timestamp"], num_items=num_items)


def _tie_broken(counts: torch.Tensor) -> torch.Tensor:
    """[V] float64 counts + 0.5 (1 - j / V): the order of counts, equal counts by lower id."""
    V = counts.shape[0]
    return counts.double() + 0.5 * (1.0 - torch.arange(V, dtype=torch.float64) / V)


#: The per-position feature the encoder reads when ``use_item_features``: the items' own table rows.
ITEM_SIDE = "item_side"


class HistoryRetrieval(SequentialRetrieval):
    """:class:`~recstack.models.sequential.SequentialRetrieval` trained from a run's interaction rows.

    Args:
        encoder, loss, ...: as SequentialRetrieval.
        max_length: L, the most recent items a history is cut to (training rows and queries).
        windows: training rows per user (1: the last L steps, as SASRec; None: all steps).
        popularity: [V] training interaction counts, the ranking of an empty history.
        histories: per user id, the items the run stored in time order (``user_embeddings``).
        item_side: the encoder reads :data:`ITEM_SIDE`, the item features of each position,
            looked up from the history itself (no extra batch column).
    """

    def __init__(self, encoder: SequenceEncoder, *, max_length: int, windows: int | None,
                 popularity: torch.Tensor, histories: IdLists | None = None, item_side: bool = False,
                 **kwargs: Any):
        super().__init__(encoder, **kwargs)
        self.item_side = bool(item_side)
        self.max_length = int(max_length)
        self.windows = windows
        # float64: the tie-break (0.5 / V between neighbours) survives counts in the millions
        self.register_buffer("popularity", _tie_broken(torch.as_tensor(popularity)))
        self.histories = histories

    def _features(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        return self._with_item_side(batch["history"], super()._features(batch))

    def _with_item_side(self, histories: torch.Tensor,
                        features: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        """``features`` plus the item-side feature of every position (the history's own ids)."""
        if not self.item_side:
            return None if features is None else dict(features)
        return {**(features or {}), ITEM_SIDE: histories}

    def query_embeddings(self, histories: torch.Tensor,
                         features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        return super().query_embeddings(histories, self._with_item_side(histories, features))

    def training_data(self, train: Columns) -> Columns:
        """Every training row (a user's last ``max_length`` steps, or more windows) as
        ``{"user", "history", "target"}``: each prefix predicts its next item."""
        histories = interaction_histories(train, self.num_items)
        return training_sequences(histories, self.max_length, windows=self.windows).columns()

    def score_items(self, histories: torch.Tensor,
                    features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[B, L] histories -> [B, V] scores; an all-pad row gets the popularity ranking."""
        scores = super().score_items(histories, features)
        empty = ~(histories != 0).any(dim=1)
        if bool(empty.any()):
            scores[empty] = self.popularity.to(scores.dtype)
        return scores

    def history_tensor(self, lists: IdLists, keys: Any) -> torch.Tensor:
        """[B, L] the last ``max_length`` items of ``lists`` rows ``keys``, left-padded."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        rows = targets_after(lists, keys, np.ones_like(keys), self.max_length)
        return torch.from_numpy(rows.history).to(self.popularity.device)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user ids -> [B, d] queries of their stored histories (``ctx.histories``)."""
        if self.histories is None:
            raise DataError("this sequential model has no stored histories (the run folder's histories.pt); "
                            "rank an explicit history with recstack recommend --history.")
        return self.query_embeddings(self.history_tensor(self.histories, users.cpu().numpy()))


class TransitionRecommender(Model):
    """The ``transitions`` kind: :class:`~recstack.models.transitions.ItemTransitions` fitted in
    closed form on the run's training rows; scores come from the history's last item, with
    popularity for ties and for items never followed in training."""

    max_length = 1   # only the last item of a history matters

    def __init__(self, num_items: int, histories: IdLists | None = None):
        super().__init__()
        self.num_items = int(num_items)
        self.transitions = ItemTransitions(self.num_items)
        self.histories = histories

    def fit(self, train: Columns, *args: Any, **kwargs: Any) -> History:  # type: ignore[override]
        """Count the transitions of ``train`` (extra arguments are ignored: no gradient steps)."""
        import time

        start = time.perf_counter()
        self.transitions.fit(interaction_histories(train, self.num_items))
        history = History()
        history.append(1, {"fit_seconds": time.perf_counter() - start,
                           "transitions": float(self.transitions.num_transitions)})
        self.history = history
        return history

    def score_items(self, histories: torch.Tensor,
                    features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[B, L] histories -> [B, V] float64 scores."""
        return self.transitions.score_items(histories, features)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """The fitted counts are as long as the distinct transitions of the training data: the
        buffers take the saved shapes before the values are copied."""
        for name in ("indptr", "next_items", "counts", "backoff"):
            value = state_dict.get(f"transitions.{name}")
            if isinstance(value, torch.Tensor):
                setattr(self.transitions, name, torch.empty_like(value))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


# -- hyperparameters -------------------------------------------------------------------------------
Loss = Literal["softmax", "sampled", "bce"]
Sampling = Literal["uniform", "popularity"]


@dataclass
class SequenceParams:
    """The settings every gradient-trained sequential kind takes.

    ``max_length``: the latest items of a history the model reads; ``embedding_dim``: d;
    ``dropout`` (sasrec: on embeddings, attention and residual branches; gru4rec: on the input
    embeddings). ``loss``: ``softmax`` (full cross-entropy over the catalogue, fused: no [n, V]
    logits in memory), ``sampled`` (in-batch targets + ``num_negatives`` items per batch with logQ
    correction: for large catalogues) or ``bce`` (SASRec's binary loss, one negative per position);
    negatives are drawn ``uniform``-ly or by ``popularity``. ``temperature`` divides the logits.
    ``shared_embeddings``: score with the input item table (else a separate output table).
    ``training_windows``: training rows per user, each of the next ``max_length`` steps going back
    in time (1: only the last, as SASRec; null: all of the user's steps). ``repeat_bias``: learn
    one score offset for the items already in the history (``softmax`` loss; see
    :class:`~recstack.models.sequential.SequentialRetrieval`): the model learns from the training
    data whether users come back to what they had. ``use_item_features``: each position also
    reads its item's categorical and text features from the item table (``data.items``), summed
    into the input embedding (:class:`~recstack.layers.item_side_features.ItemSideFeatures`).
    """

    max_length: int = 50
    embedding_dim: int = 64
    dropout: float = 0.2
    loss: Loss = "softmax"
    num_negatives: int = 100
    negative_sampling: Sampling = "uniform"
    temperature: float | None = None
    shared_embeddings: bool = True
    training_windows: int | None = None
    repeat_bias: bool = False
    use_item_features: bool = False


@dataclass
class SASRecParams(SequenceParams):
    """SASRec-style causal self-attention over the last ``max_length`` items (Kang & McAuley 2018):
    ``num_blocks`` transformer blocks with ``num_heads`` heads (``embedding_dim`` divisible by it),
    FFN width ``ffn_dim`` (null: embedding_dim) and ``activation``, ``norm``: pre- or post-layer-norm.
    Learned positions count from the first real item. The rest: :class:`SequenceParams`."""

    num_blocks: int = 2
    num_heads: int = 1
    ffn_dim: int | None = None
    norm: Literal["pre", "post"] = "pre"
    activation: str = "gelu"


@dataclass
class GRU4RecParams(SequenceParams):
    """GRU4Rec-style recurrent encoder (Hidasi et al. 2016, as RecBole's GRU4Rec): ``num_layers``
    GRU layers of width ``hidden_size`` (null: embedding_dim) over the last ``max_length`` items.
    The rest: :class:`SequenceParams`."""

    hidden_size: int | None = None
    num_layers: int = 1


def _common_problems(p: SequenceParams) -> list[str | None]:
    problems: list[str | None] = [
        bound("model.max_length", p.max_length, 1, MAX_SEQUENCE_LENGTH,
              "every training row and query holds this many items; published models use 50-200"),
        bound("model.embedding_dim", p.embedding_dim, 1, MAX_WIDTH, WIDTH_WHY),
    ]
    if not 0 <= p.dropout < 1:
        problems.append(f"model.dropout: must be in [0, 1), got {p.dropout}")
    if p.loss == "sampled":
        problems.append(bound("model.num_negatives", p.num_negatives, 1, MAX_NEGATIVES,
                              "each adds a logit per position of the batch"))
    if p.temperature is not None and p.temperature <= 0:
        problems.append(f"model.temperature: must be > 0 (or null: none), got {p.temperature}")
    if p.repeat_bias and p.loss != "softmax":
        problems.append(f"model.repeat_bias: needs model.loss: softmax (it offsets the logits of every item), got "
                        f"loss {p.loss!r}")
    if p.training_windows is not None and p.training_windows < 1:
        problems.append(f"model.training_windows: must be >= 1 (or null: all of each user's steps), got "
                        f"{p.training_windows}")
    return problems


def check_sasrec(p: SASRecParams) -> list[str]:
    problems = _common_problems(p) + [
        bound("model.num_blocks", p.num_blocks, 1, MAX_DEPTH, "published models use 1-8 blocks"),
        bound("model.num_heads", p.num_heads, 1, MAX_WIDTH, WIDTH_WHY),
        _activation_problem("model.activation", p.activation)]
    if p.ffn_dim is not None:
        problems.append(bound("model.ffn_dim", p.ffn_dim, 1, MAX_WIDTH, WIDTH_WHY))
    if p.num_heads >= 1 and p.embedding_dim % p.num_heads:
        problems.append(f"model.num_heads: model.embedding_dim ({p.embedding_dim}) must be divisible by it, got "
                        f"{p.num_heads}")
    return [x for x in problems if x]


def check_gru4rec(p: GRU4RecParams) -> list[str]:
    problems = _common_problems(p) + [bound("model.num_layers", p.num_layers, 1, MAX_DEPTH,
                                            "published models use 1-3 layers")]
    if p.hidden_size is not None:
        problems.append(bound("model.hidden_size", p.hidden_size, 1, MAX_WIDTH, WIDTH_WHY))
    return [x for x in problems if x]


def _sequence_memory(ctx: ModelContext, p: SequenceParams, layer_params: int) -> MemoryEstimate:
    """Float32 item (and position) tables and layers with gradients and optimizer state (x4), the
    int64 training rows (inputs and targets: at most n + users x max_length cells each)."""
    d, V, L = p.embedding_dim, ctx.num_items, p.max_length
    tables = (V * (1 if p.shared_embeddings else 2) + L + 1) * d
    rows = ctx.train.num_rows if ctx.train is not None else 0
    cells = rows + ctx.num_users * L
    return MemoryEstimate(16 * (tables + layer_params) + 16 * cells,
                          f"{V:,} item embeddings x {d} and {layer_params:,} layer weights, float32, with gradients "
                          f"and optimizer state, and up to {cells:,} training positions")


def sasrec_memory(ctx: ModelContext, p: SASRecParams) -> MemoryEstimate:
    d, f = p.embedding_dim, p.ffn_dim or p.embedding_dim
    return _sequence_memory(ctx, p, p.num_blocks * (4 * d * d + 2 * d * f + 9 * d + f))


def gru4rec_memory(ctx: ModelContext, p: GRU4RecParams) -> MemoryEstimate:
    d, h = p.embedding_dim, p.hidden_size or p.embedding_dim
    return _sequence_memory(ctx, p, 3 * h * (d + h + 2) + 3 * h * (2 * h + 2) * (p.num_layers - 1) + h * d + d)


# -- builders --------------------------------------------------------------------------------------
def _retrieval(ctx: ModelContext, p: SequenceParams, encoder: SequenceEncoder) -> HistoryRetrieval:
    V = ctx.num_items
    if ctx.train is not None:
        histories = interaction_histories(ctx.train, V)
        popularity = torch.from_numpy(histories.item_counts(V))
        targets = torch.from_numpy(training_sequences(histories, p.max_length, windows=p.training_windows)
                                   .target_counts(V)).double()
        if int((targets[1:] > 0).sum()) == 0:
            raise DataError("no user has two training interactions: the sequential kinds learn from each user's "
                            "next item and have nothing to learn from.")
    else:  # rebuilding a saved run: same-shaped placeholders; load_state_dict brings the fitted values
        popularity = torch.zeros(V)
        targets = torch.ones(V, dtype=torch.float64)
    seed = int(torch.randint(0, 2**31 - 1, (1,)))   # torch is seeded with config.seed before the builder
    try:
        return HistoryRetrieval(
            encoder, loss=p.loss, share_embeddings=p.shared_embeddings,
            num_negatives=p.num_negatives if p.loss == "sampled" else 0,
            negative_weights=targets if p.negative_sampling == "popularity" else None,
            candidate_counts=targets if p.loss == "sampled" else None, temperature=p.temperature, seed=seed,
            max_length=p.max_length, windows=p.training_windows, popularity=popularity, histories=ctx.histories,
            repeat_bias=p.repeat_bias, item_side=p.use_item_features)
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None


def item_side_encoders(ctx: ModelContext, p: SequenceParams) -> dict[str, ItemSideFeatures] | None:
    """The encoder's item-feature input when ``use_item_features`` (tables filled when training)."""
    if not p.use_item_features:
        return None
    spec = ctx.item_features
    if not spec.categorical_sizes and not spec.text_vocab_size:
        raise ConfigError("model.use_item_features: the run has no categorical or text item features; map them "
                          "with data.items: {path: ..., id: ..., categorical: [...], text: ...}, or set "
                          "model.use_item_features: false.")
    side = ItemSideFeatures(ctx.num_items, p.embedding_dim, spec.categorical_sizes, spec.text_vocab_size,
                            spec.text_length)
    tables = (ctx.feature_tables or {}).get("item", {})
    side.set_tables(categorical=tables.get("categorical") if spec.categorical_sizes else None,
                    text=tables.get("text") if spec.text_vocab_size else None)
    return {ITEM_SIDE: side}


def build_sasrec(ctx: ModelContext, p: SASRecParams) -> Model:
    encoder = SASRecEncoder(ctx.num_items, p.embedding_dim, max_length=p.max_length, num_blocks=p.num_blocks,
                            num_heads=p.num_heads, dropout=p.dropout, norm_first=p.norm == "pre",
                            ffn_dim=p.ffn_dim, activation=p.activation, feature_encoders=item_side_encoders(ctx, p))
    return _retrieval(ctx, p, encoder)


def build_gru4rec(ctx: ModelContext, p: GRU4RecParams) -> Model:
    encoder = GRU4RecEncoder(ctx.num_items, p.embedding_dim, hidden_size=p.hidden_size, num_layers=p.num_layers,
                             dropout=p.dropout, feature_encoders=item_side_encoders(ctx, p))
    return _retrieval(ctx, p, encoder)


def build_transitions(ctx: ModelContext, p: Any) -> Model:
    return TransitionRecommender(ctx.num_items, histories=ctx.histories)


def transitions_memory(ctx: ModelContext, p: Any) -> MemoryEstimate:
    """At most one (next item, count) pair per training interaction, plus per-item offsets and backoff."""
    n = ctx.train.num_rows if ctx.train is not None else 0
    return MemoryEstimate(16 * n + 24 * (ctx.num_items + 1),
                          f"up to {n:,} distinct transitions (int64 ids, float64 counts)")


register_model_kind("sasrec", build_sasrec, SASRecParams,
                    "SASRec-style causal self-attention over each user's history (next-item retrieval)",
                    check=check_sasrec, memory=sasrec_memory, sequential=True)
register_model_kind("gru4rec", build_gru4rec, GRU4RecParams,
                    "GRU4Rec-style recurrent encoder over each user's history (next-item retrieval)",
                    check=check_gru4rec, memory=gru4rec_memory, sequential=True)
register_model_kind("transitions", build_transitions, None,
                    "item-to-item transitions: items that came right after the history's last item (closed form)",
                    gradient_trained=False, memory=transitions_memory, sequential=True)

__all__ = ["GRU4RecParams", "HistoryRetrieval", "SASRecParams", "SequenceParams", "TransitionRecommender",
           "interaction_histories"]
