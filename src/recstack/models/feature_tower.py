"""Feature-aware towers and the generic two-tower model behind ``recstack train``.

A :class:`FeatureTower` embeds entity *indices* (encoded user or item ids, 0 =
out of vocabulary). The entity's side features live in the tower as
persistent buffers indexed by the same id, so a batch only carries ``user``
and ``item`` columns and the saved ``state_dict`` holds everything a
recommendation needs::

    parts  = [E_id[i]]                                         (d, unless use_id is False)
           + [pool_t E_item[H[i, t]]]                          (d, if history_items: the user's
                                                                latest items H, mean or attention;
                                                                summed into E_id[i] with "sum")
           + [E_cat_j[C[i, j]] for each categorical column j]  (d each)
           + [W_num N[i] + b]                                  (d, if numeric columns)
           + [masked mean_t E_tok[T[i, t]]]                    (d, if a text column)
           + [E_time[bucket(t)], norm(t)]                      (d + 1, if timestamp_buckets;
                                                                t = the interaction's timestamp)
    output = MLP(layer_sizes)(concat(parts))    if layer_sizes
           = Dense(len(parts) * d -> d)(concat)  if several parts and no layer_sizes
           = parts[0]                            otherwise (a plain id embedding)

With no features and no layers the tower is exactly the id embedding of the
TFRS basic-retrieval tutorial. The towers implement ``get_config`` /
``from_config`` so bundles can rebuild them (recstack.models.tower_codec).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..layers.candidates import TowerCandidates
from ..core.columns import Batch
from ..core.errors import ConfigError, DataError, ShapeError
from ..core.exclusions import Exclusions
from ..layers import MLP, Dense, Embedding, HistoryPooling, MaskedMeanEmbedding
from ..layers.tables import fill_table
from ..layers.time_context import TimestampFeatures
from ..metrics import FactorizedTopK, RootMeanSquaredError
from .two_tower import TwoTowerRetrieval, batch_candidates, distinct_rows, global_batch_loss
from ..tasks import Ranking, Retrieval


class FeatureTower(nn.Module):
    """Id embedding plus optional categorical / numeric / text features of the same entity.

    Args:
        num_ids: id vocabulary size (OOV index 0 included); also the rows of the feature tables.
        embedding_dim: width d of every embedding part.
        categorical_sizes: vocabulary size of each categorical feature column.
        num_numeric: number of numeric feature columns (normalised upstream).
        text_vocab_size: TextVectorization vocabulary size (0 = no text feature).
        text_length: token positions per entity in the text table.
        layer_sizes: MLP widths on top of the concatenated parts (empty = none).
        activation: hidden activation of the MLP.
        l2: L2 coefficient on every embedding table and dense kernel.
        sparse_gradients: the id embedding produces sparse gradients (only the batch's rows), so
            a step costs O(batch) instead of O(table) for large catalogues; needs l2 = 0.
        timestamp_buckets: add the interaction time as context (the TFRS deep-retrieval query
            tower): :class:`~recstack.layers.time_context.TimestampFeatures` with this many
            equal-width boundaries, fitted with :meth:`fit_timestamps`. 0 = no time feature.
        history_items: a user tower that reads the user's history: the item id space V of a
            :class:`~recstack.layers.HistoryPooling` over ``history_table`` (a [num_ids,
            history_length] buffer of item ids, 0 = padding, filled by :meth:`set_history_table`).
            0 = no history.
        history_length: items kept per user (the table's width).
        history_pooling: "mean" or "attention".
        history_combine: "concat" (the pooled history is a part of its own) or "sum" (added to the
            id embedding: one part, so a tower without features and layers stays d wide, no projection).
        use_id: embed the id itself (False: a history-only user tower, no id table).

    Input LongTensor [B] of ids (and, with timestamp_buckets, timestamps [B]; without them
    the latest fitted timestamp stands for "now") -> [B, output_dim]. A history tower also takes
    ``histories`` [B, L] (item ids to pool instead of the stored rows of ``ids``, e.g. a new user's)
    and ``exclude_items`` [B] (an item per row left out of its pooled history: a training example's
    own item, so the tower cannot learn to copy it).
    """

    def __init__(self, num_ids: int, embedding_dim: int = 32, categorical_sizes: Sequence[int] = (),
                 num_numeric: int = 0, text_vocab_size: int = 0, text_length: int = 0,
                 layer_sizes: Sequence[int] = (), activation: str = "relu", l2: float = 0.0,
                 timestamp_buckets: int = 0, sparse_gradients: bool = False, history_items: int = 0,
                 history_length: int = 0, history_pooling: str = "mean", history_combine: str = "concat",
                 use_id: bool = True):
        super().__init__()
        self.config = {"num_ids": int(num_ids), "embedding_dim": int(embedding_dim),
                       "categorical_sizes": [int(n) for n in categorical_sizes], "num_numeric": int(num_numeric),
                       "text_vocab_size": int(text_vocab_size), "text_length": int(text_length),
                       "layer_sizes": [int(n) for n in layer_sizes], "activation": activation, "l2": float(l2),
                       "timestamp_buckets": int(timestamp_buckets), "sparse_gradients": bool(sparse_gradients)}
        if history_items:   # only then: configs saved before the history option keep their keys
            self.config.update({"history_items": int(history_items), "history_length": int(history_length),
                                "history_pooling": history_pooling, "history_combine": history_combine,
                                "use_id": bool(use_id)})
        if sparse_gradients and l2:
            raise ConfigError("sparse_gradients needs l2 = 0: the L2 penalty's gradient touches every row.")
        if not use_id and not history_items:
            raise ConfigError("use_id=False needs history_items > 0: the tower would have no input.")
        if history_items and history_length < 1:
            raise ConfigError(f"history_length must be >= 1 with a history; got {history_length}.")
        if history_combine not in ("concat", "sum"):
            raise ConfigError(f"history_combine must be 'concat' or 'sum'; got {history_combine!r}.")
        d = int(embedding_dim)
        # Created first, so a feature-less tower initialises exactly like a lone Embedding.
        self.id_embedding = Embedding(num_ids, d, l2=l2, sparse=bool(sparse_gradients)) if use_id else None
        self.history = (HistoryPooling(int(history_items), d, history_pooling, l2=l2, sparse=bool(sparse_gradients))
                        if history_items else None)
        self.history_combine = history_combine
        if self.history is not None:
            # The stored histories, indexed by id; persistent so a saved run queries without the data.
            self.register_buffer("history_table", torch.zeros(num_ids, int(history_length), dtype=torch.long))
        self.categorical = nn.ModuleList(Embedding(int(n), d, l2=l2) for n in categorical_sizes)
        self.numeric = Dense(num_numeric, d, l2=l2) if num_numeric else None
        self.text = MaskedMeanEmbedding(text_vocab_size, d, l2=l2) if text_vocab_size else None
        # Feature tables indexed by id; persistent so the weights file carries them.
        self.register_buffer("categorical_table", torch.zeros(num_ids, len(self.categorical), dtype=torch.long))
        self.register_buffer("numeric_table", torch.zeros(num_ids, int(num_numeric)))
        self.register_buffer("text_table", torch.zeros(num_ids, int(text_length) if text_vocab_size else 0,
                                                       dtype=torch.long))
        self.time = TimestampFeatures(int(timestamp_buckets), d, l2=l2) if timestamp_buckets else None
        history_part = self.history is not None and not (history_combine == "sum" and use_id)
        num_parts = (int(use_id) + history_part + len(self.categorical) + (self.numeric is not None)
                     + (self.text is not None) + (self.time is not None))
        width = num_parts * d + (self.time is not None)   # the time part adds the normalised value
        if layer_sizes:
            self.head: nn.Module = MLP(width, list(layer_sizes), activation=activation, l2=l2)
            self.output_dim = int(layer_sizes[-1])
        elif num_parts > 1:
            self.head = Dense(width, d, l2=l2)
            self.output_dim = d
        else:
            self.head = nn.Identity()
            self.output_dim = d

    def set_feature_tables(self, categorical: torch.Tensor | None = None, numeric: torch.Tensor | None = None,
                           text: torch.Tensor | None = None) -> None:
        """Fill the per-id feature tables: categorical [N, n_cat] long, numeric [N, n_num], text [N, L] long."""
        for name, value in (("categorical_table", categorical), ("numeric_table", numeric), ("text_table", text)):
            if value is not None:
                fill_table(self, name, value)

    @property
    def history_length(self) -> int:
        """Items of history read per user (0: not a history tower)."""
        return int(self.history_table.shape[1]) if self.history is not None else 0

    def set_history_table(self, table: torch.Tensor) -> None:
        """Store the users' histories: [num_ids, history_length] item ids, 0 = padding (see
        :func:`recstack.models.user_history.latest_items_table`)."""
        if self.history is None:
            raise ConfigError("this tower reads no history (history_items = 0).")
        fill_table(self, "history_table", table)

    def fit_timestamps(self, timestamps: torch.Tensor) -> None:
        """Fit the time feature's buckets and normalisation (no-op without timestamp_buckets)."""
        if self.time is not None:
            self.time.fit(timestamps)

    def forward(self, ids: torch.Tensor, timestamps: torch.Tensor | None = None, *,
                histories: torch.Tensor | None = None, exclude_items: torch.Tensor | None = None) -> torch.Tensor:
        ids = ids.long()
        parts = [] if self.id_embedding is None else [self.id_embedding(ids)]
        if self.history is not None:
            items = self.history_table[ids] if histories is None else histories.long()
            if exclude_items is not None:                              # [B, L]: every copy of the row's item
                items = items.masked_fill(items == exclude_items.long().view(-1, 1), 0)
            pooled = self.history(items)
            if self.history_combine == "sum" and parts:
                parts[0] = parts[0] + pooled
            else:
                parts.append(pooled)
        elif histories is not None:
            raise ShapeError("this tower reads no history; histories= needs a tower built with history_items.")
        if len(self.categorical):
            codes = self.categorical_table[ids]                            # [B, n_cat]
            parts.extend(emb(codes[:, j]) for j, emb in enumerate(self.categorical))
        if self.numeric is not None:
            parts.append(self.numeric(self.numeric_table[ids]))
        if self.text is not None:
            parts.append(self.text(self.text_table[ids]))
        if self.time is not None:
            parts.append(self.time(timestamps, batch_size=ids.shape[0]))
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.head(features)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON); the feature tables travel in the state_dict."""
        return dict(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "FeatureTower":
        return cls(**config)


class FeatureTwoTower(TwoTowerRetrieval):
    """TwoTowerRetrieval over :class:`FeatureTower` s, with an optional rating head.

    Batches carry ``user`` and ``item`` (LongTensor ids), ``query_key`` (LongTensor,
    one value per distinct raw user, for per-user metrics), and optionally ``rating``
    and ``weight`` (float32).

        loss = w_retrieval * Retrieval(q, c) + w_rating * MSE(rating, head(concat(q, c)))

    With ``logq_correction`` the training logits are corrected by the items' training
    frequencies (``item_probability``, filled by :meth:`set_item_probability`).

    where ``head`` is an MLP ending in one unit. The retrieval metric ranks the
    catalogue (``catalogue``: item ids) with FactorizedTopK, optionally excluding
    ``exclude`` per query key (the "exclude seen" protocol).
    """

    def __init__(self, query_tower: FeatureTower, candidate_tower: FeatureTower, catalogue: torch.Tensor, *,
                 retrieval_weight: float = 1.0, rating_weight: float = 0.0,
                 rating_layer_sizes: Sequence[int] = (64, 32), temperature: float | None = None,
                 remove_accidental_hits: bool = False, num_hard_negatives: int | None = None,
                 reduction: str = "sum", ks: Sequence[int] = (1, 5, 10, 50, 100),
                 exclude: Exclusions | None = None, per_user_metrics: bool = False,
                 use_weight: bool = False, train_metrics: bool = False, activation: str = "relu",
                 logq_correction: bool = False, sampled_negatives: int = 0):
        if query_tower.output_dim != candidate_tower.output_dim:
            raise ShapeError(f"the user tower outputs {query_tower.output_dim} values but the item tower "
                             f"{candidate_tower.output_dim}; give both the same final width.")
        catalogue = torch.as_tensor(catalogue).long()
        metric = FactorizedTopK(TowerCandidates(candidate_tower, catalogue), catalogue, ks=ks, exclude=exclude)
        task = Retrieval(metrics=metric, temperature=temperature, remove_accidental_hits=remove_accidental_hits,
                         num_hard_negatives=num_hard_negatives, reduction=reduction)
        super().__init__(query_tower, candidate_tower, task, query_inputs="user", candidate_inputs="item",
                         candidate_id="item",
                         query_key="query_key" if (per_user_metrics or exclude is not None) else None,
                         sample_weight="weight" if use_weight else None, train_metrics=train_metrics,
                         deduplicate_candidates=True)
        self.retrieval_weight = float(retrieval_weight)
        self.rating_weight = float(rating_weight)
        self.catalogue = catalogue
        self.logq_correction = bool(logq_correction)
        # P(item) in the training rows, for logQ correction; a buffer so it is saved with the weights.
        self.register_buffer("item_probability",
                             torch.zeros(candidate_tower.config["num_ids"] if logq_correction else 0))
        if sampled_negatives < 0:
            raise ConfigError(f"sampled_negatives must be >= 0; got {sampled_negatives}.")
        self.sampled_negatives = int(sampled_negatives)
        # The distribution sampled negatives are drawn from (set_negative_distribution).
        self.register_buffer("negative_probability",
                             torch.zeros(candidate_tower.config["num_ids"] if sampled_negatives else 0),
                             persistent=bool(sampled_negatives))  # runs without it keep loading
        if self.rating_weight > 0:
            width = query_tower.output_dim * 2
            self.rating_head: nn.Module | None = MLP(width, [*rating_layer_sizes, 1], activation=activation)
            self.rating_task: Ranking | None = Ranking(metrics=[RootMeanSquaredError()])
        else:
            self.rating_head = None
            self.rating_task = None

    @property
    def reads_histories(self) -> bool:
        """Whether the user tower pools the user's history (``model.user_history``): then the kind's
        ``history_query`` turns any history, a new user's too, into a query."""
        return self.query_tower.history is not None

    def query_embeddings(self, batch: Batch, exclude_target: bool = False) -> torch.Tensor:
        """[B, d] queries of a batch: the user, and the row's timestamp when the tower uses time.

        ``exclude_target``: a history tower leaves each row's own ``item`` out of the user's pooled
        history (training: the example's item must not be an input of its own query)."""
        exclude = batch["item"] if exclude_target and self.query_tower.history is not None else None
        if self.query_tower.time is None:
            return self.query_tower(batch["user"], exclude_items=exclude)
        if "timestamp" not in batch:
            raise ShapeError("this model's user tower uses the interaction time (model.timestamp_buckets) but "
                             "the batch has no 'timestamp' column; map one with data.columns.timestamp.")
        return self.query_tower(batch["user"], batch["timestamp"], exclude_items=exclude)

    def history_query_embeddings(self, histories: torch.Tensor) -> torch.Tensor:
        """[B, L] item ids (0 = padding) -> [B, d]: the query of a user known only by these items (the
        unknown-user id 0, whose id embedding is the cold-start one; the latest fitted time)."""
        if self.query_tower.history is None:
            raise ConfigError("this two-tower model's user tower reads no history; train it with "
                              "model.user_history to query by history.")
        device = self.query_tower.history_table.device
        ids = torch.zeros(histories.shape[0], dtype=torch.long, device=device)
        return self.query_tower(ids, histories=histories.to(device))

    # The factorized-model contract used for evaluation, recommend and similar.
    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user ids -> [B, d] (a time-aware tower queries at the latest training time)."""
        return self.query_tower(users)

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """[B] item ids -> [B, d]."""
        return self.candidate_tower(items)

    def set_item_probability(self, items: torch.Tensor) -> None:
        """P(item) = count(item) / n over the training rows' item ids (for logQ correction)."""
        counts = torch.bincount(items.long().cpu(), minlength=self.item_probability.shape[0]).float()
        self.item_probability.copy_(counts / max(int(items.shape[0]), 1))

    def set_negative_distribution(self, items: torch.Tensor, alpha: float = 1.0) -> None:
        """Sampled negatives ~ count(item)^alpha over the training rows' item ids (alpha 0: uniform over
        the items seen in training); the unknown id 0 is never sampled."""
        counts = torch.bincount(items.long().cpu(), minlength=self.negative_probability.shape[0]).double()
        weights = torch.where(counts > 0, counts.pow(alpha), torch.zeros_like(counts))
        weights[0] = 0.0
        if float(weights.sum()) <= 0:
            raise DataError("no training items to sample negatives from.")
        self.negative_probability.copy_((weights / weights.sum()).to(self.negative_probability.dtype))

    def candidate_probability(self, items: torch.Tensor, batch_rows: int) -> torch.Tensor:
        """Q(item) for the logQ correction: the training frequency, mixed with the sampling
        distribution by the share of slots, (B P_train + K P_sampled) / (B + K), with sampled negatives."""
        train = self.item_probability[items]
        if not self.sampled_negatives:
            return train
        k = self.sampled_negatives
        return (batch_rows * train + k * self.negative_probability[items]) / (batch_rows + k)

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        # Item towers read only the item id (features come from per-item tables), so the tower runs
        # once per distinct item and the loss scores distinct items with their multiplicities.
        # Across ranks, the distinct items are those of the whole global batch (batch_candidates).
        q = self.query_embeddings(batch, exclude_target=training)
        rows = q.shape[0]
        global_items, offset, size = batch_candidates(batch, [], "item")
        candidate_ids = global_items["item"]
        sampling = training and self.sampled_negatives > 0 and self.retrieval_weight > 0
        if sampling:
            # Every rank draws the same ids (same torch RNG stream), so the negatives are a single
            # process's; the RNG state is checkpointed, so resumed runs draw the same ones too.
            extra = torch.multinomial(self.negative_probability, self.sampled_negatives, replacement=True)
            candidate_ids = torch.cat([candidate_ids, extra.to(candidate_ids.device)])
        items, inverse, counts, _ = distinct_rows(candidate_ids)
        local = inverse[offset:offset + rows]
        c = self.candidate_tower(items)                                   # [u, d]
        weight = batch[self.sample_weight] if self.sample_weight else None
        total = q.new_zeros(())
        if self.retrieval_weight > 0 or not training:
            probability = self.candidate_probability(items, size) if self.logq_correction and training else None
            loss = self.task(q, c, sample_weight=weight, candidate_ids=items, positive_index=local,
                             candidate_counts=counts, candidate_sampling_probability=probability,
                             query_keys=batch[self.query_key] if self.query_key else None,
                             compute_metrics=self.train_metrics or not training)
            total = total + self.retrieval_weight * global_batch_loss(loss, self.task, rows, size)
        if self.rating_task is not None:
            assert self.rating_head is not None
            predicted = self.rating_head(torch.cat([q, c.index_select(0, local)], dim=1)).squeeze(-1)
            rating_loss = self.rating_task(batch["rating"], predicted, sample_weight=weight)
            # A mean over this rank's rows -> its share of the mean over the global batch.
            total = total + self.rating_weight * rating_loss * (rows / max(size, 1))
        return total


__all__ = ["FeatureTower", "FeatureTwoTower"]
