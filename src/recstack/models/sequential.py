"""Next-item retrieval: a sequence query tower over a history and an item embedding table.

The query of a history is the encoder's state at its last real position; an item's
candidate embedding is its row of the output table (the encoder's input table when
``share_embeddings``). Scores are dot products, so the model plugs into the top-k indexes
and :func:`recstack.models.next_item_eval.evaluate_next_item`.

Training uses every position of every training row (see
:class:`~recstack.datasets.sequences.TrainingSequences`): with states h_t = encoder(x)_t and
targets y_t (0 = no target), over the n real positions of the batch, with e_j the output
embedding of item j and catalogue 1..V-1 (the pad row 0 is never a candidate):

* ``"softmax"``: full cross-entropy, loss = mean_t [logsumexp_j (h_t . e_j / T) - h_t . e_{y_t} / T],
  computed block-wise by the fused kernel (no [n, V] logits in memory);
* ``"sampled"``: in-batch + sampled negatives: the candidates are the batch's distinct
  targets plus ``num_negatives`` ids drawn with replacement from ``negative_weights``
  (uniform without it), merged and counted; each candidate's logit is corrected by
  -log q_j with q_j ∝ n p_j + S u_j, the expected number of its copies (p = training
  target frequencies ``candidate_counts`` for in-batch copies, u = the negative sampling
  distribution); other copies of a row's own target are masked (accidental hits). Without
  ``candidate_counts`` only the sampled part is corrected (p_j = 0). Through
  :class:`~recstack.tasks.Retrieval`'s fused loss with ``reduction="mean"``;
* ``"bce"``: SASRec's original loss with one negative z_t != y_t per position, drawn from
  ``negative_weights`` (uniform by default, as in SASRec):
  loss = mean_t [softplus(-h_t . e_{y_t}) + softplus(h_t . e_{z_t})].

``repeat_bias`` (``"softmax"`` only) adds one learned scalar b to the score of every item already
in the history the state has read: s_j(t) = h_t . e_j + b [j in x_1..x_t] (at scoring time: in
the given history). It is the simplest form of a repeat-aware recommender (RepeatNet's
repeat-vs-explore in one number): trained on data where users never return to an item, b
becomes strongly negative and the model stops recommending what the user already had; on data
with repeat consumption it learns how much repeating is worth. It is learned from the training
rows, never set by the evaluation protocol. The loss then forms the [n, V] logits explicitly
(the fused kernel has no per-row offsets), which is fine for catalogues of up to ~10^5 items.

Sampling draws from the model's own generator (``seed``), so a seeded run repeats itself;
the generator's position is not part of ``state_dict``, so a resumed run draws other negatives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ..core.columns import Batch
from ..core.errors import ConfigError, DataError, ShapeError
from ..layers.embedding import Embedding
from ..layers.retrieval_loss import softmax_retrieval_loss
from ..layers.sequence import SequenceEncoder
from ..tasks.retrieval import Retrieval
from ..training.model import Model

LossKind = Literal["softmax", "sampled", "bce"]
LOSSES: tuple[str, ...] = ("softmax", "sampled", "bce")


def last_positions(items: torch.Tensor) -> torch.Tensor:
    """[B] column of each row's last non-pad item (0 for an all-pad row)."""
    columns = torch.arange(items.shape[1], device=items.device)
    return ((items != 0) * columns).amax(dim=1)


def in_history(histories: torch.Tensor, num_items: int) -> torch.Tensor:
    """[B, L] item ids (0 = pad) -> [B, V] bool: item j occurs in row b (column 0 always False)."""
    mask = torch.zeros(histories.shape[0], num_items, dtype=torch.bool, device=histories.device)
    mask.scatter_(1, histories.long(), True)
    mask[:, 0] = False
    return mask


class SequentialRetrieval(Model):
    """Next-item retrieval over a sequence encoder (SASRec-, GRU4Rec-style).

    Args:
        encoder: :class:`~recstack.layers.sequence.SASRecEncoder` or
            :class:`~recstack.layers.sequence.GRU4RecEncoder` (anything with ``num_items``,
            ``embedding_dim``, ``item_embedding`` and ``forward(items [B, L], features) ->
            [B, L, d]``).
        loss: "softmax", "sampled" or "bce" (see the module docstring).
        share_embeddings: score with the encoder's input table (True) or a separate one.
        num_negatives: sampled negatives per batch ("sampled") - at least 1.
        negative_weights: [V] weights of the negative distribution ("sampled"; default
            uniform over 1..V-1).
        candidate_counts: [V] training target counts (``TrainingSequences.target_counts``)
            for the logQ correction of in-batch candidates ("sampled").
        temperature: logits are divided by it ("softmax", "sampled").
        features: batch columns passed to the encoder as per-position features.
        seed: seeds the negative sampler.
        repeat_bias: learn the offset b of items already in the history ("softmax" only).
    """

    def __init__(self, encoder: SequenceEncoder, *, loss: LossKind = "softmax", share_embeddings: bool = True,
                 num_negatives: int = 0, negative_weights: torch.Tensor | None = None,
                 candidate_counts: torch.Tensor | None = None, temperature: float | None = None,
                 features: Sequence[str] = (), seed: int = 0, repeat_bias: bool = False):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}; got {loss!r}.")
        if repeat_bias and loss != "softmax":
            raise ConfigError(f"repeat_bias needs loss='softmax' (the logits of every item, with the history's "
                              f"offset); got loss={loss!r}.")
        if loss == "sampled" and num_negatives < 1:
            raise ConfigError("loss='sampled' needs num_negatives >= 1 (the negatives drawn per batch, beside the "
                              "in-batch targets).")
        if temperature is not None and temperature <= 0:
            raise ConfigError(f"temperature must be positive; got {temperature}.")
        self.encoder = encoder
        self.num_items = int(encoder.num_items)
        self.loss = loss
        self.share_embeddings = share_embeddings
        self.output_embedding = None if share_embeddings else Embedding(
            self.num_items, encoder.embedding_dim, padding_idx=0)
        self.num_negatives = int(num_negatives)
        self.temperature = temperature
        self.features = tuple(features)
        self.register_buffer("negative_probability", self._distribution(negative_weights, "negative_weights"))
        if loss == "bce" and int((self.negative_probability > 0).sum()) < 2:
            raise ConfigError("loss='bce' needs at least two items with a positive negative_weight (a negative "
                              "must differ from the target).")
        counts = None if candidate_counts is None else self._distribution(candidate_counts, "candidate_counts")
        self.register_buffer("target_probability", counts)
        self.task = Retrieval(temperature=temperature, remove_accidental_hits=True, reduction="mean")
        #: b, the learned score offset of items already in the history (None: not used).
        self.repeat_bias = torch.nn.Parameter(torch.zeros(())) if repeat_bias else None
        self.generator = torch.Generator().manual_seed(int(seed))

    def _distribution(self, weights: torch.Tensor | None, name: str) -> torch.Tensor:
        """[V] probabilities over 1..V-1 from non-negative weights (uniform when None)."""
        w = torch.ones(self.num_items, dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64).reshape(-1).clone()
        if w.shape[0] != self.num_items or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ConfigError(f"{name} must hold {self.num_items} finite non-negative numbers (one per item id); "
                              f"got shape {tuple(w.shape)}.")
        w[0] = 0.0
        if float(w.sum()) <= 0:
            raise ConfigError(f"{name} gives every item weight 0.")
        return (w / w.sum()).float()

    # Embeddings -------------------------------------------------------------------------
    @property
    def item_table(self) -> Embedding:
        """The output embedding table [V, d] (row 0 = pad, never a candidate)."""
        return self.encoder.item_embedding if self.output_embedding is None else self.output_embedding

    def _features(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        if not self.features:
            return None
        missing = [f for f in self.features if f not in batch]
        if missing:
            raise DataError(f"the batch lacks the feature columns {missing}; it has {sorted(batch)}.")
        return {f: batch[f] for f in self.features}

    def query_embeddings(self, histories: torch.Tensor,
                         features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[B, L] histories (0 = pad) -> [B, d], the state at each row's last real item.

        An all-pad row gets a zero query (every item scores 0): callers that may pass empty
        histories should fall back to another ranking for them.
        """
        states = self.encoder(histories, features)
        return states[torch.arange(states.shape[0], device=states.device), last_positions(histories)]

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """[...] item ids -> [..., d] candidate embeddings."""
        return self.item_table(items.long())

    def catalogue_ids(self) -> torch.Tensor:
        """[V - 1] the rankable item ids 1..V-1."""
        return torch.arange(1, self.num_items)

    def score_items(self, histories: torch.Tensor,
                    features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[B, V] scores of every item id (column 0 is the pad id: ignore it): q . e_j, plus
        ``repeat_bias`` for the items of the row's history when the model has one."""
        scores = self.query_embeddings(histories, features) @ self.item_table.weight.T
        if self.repeat_bias is not None:
            scores = scores + self.repeat_bias * in_history(histories, self.num_items).to(scores.dtype)
        return scores

    # Loss -----------------------------------------------------------------------------
    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        """Training batch (``target`` [B, L]): the loss over every real position.
        Evaluation batch (``target`` [B], from ``EvalSequences.columns()``): the loss of the
        held-out item given the history."""
        history, target = batch["history"], batch["target"]
        features = self._features(batch)
        if target.dim() == 2:
            if target.shape != history.shape:
                raise ShapeError(f"target {tuple(target.shape)} and history {tuple(history.shape)} differ in shape.")
            states = self.encoder(history, features)
            valid = target != 0
            queries, positives = states[valid], target[valid].long()
            # what state t has read: x_1..x_t (later columns masked to the pad id 0)
            L = history.shape[1]
            read = torch.ones(L, L, dtype=torch.bool, device=history.device).tril()
            seen = (history.unsqueeze(1) * read).masked_fill(~read, 0)[valid] if self.repeat_bias is not None \
                else None
        elif target.dim() == 1:
            queries, positives = self.query_embeddings(history, features), target.long()
            seen = history
        else:
            raise ShapeError(f"target must be [B, L] (training) or [B] (evaluation); got {tuple(target.shape)}.")
        if positives.numel() == 0:
            return queries.sum() * 0.0
        if int(positives.min()) < 1 or int(positives.max()) >= self.num_items:
            raise DataError(f"target ids must lie in [1, {self.num_items}); got "
                            f"[{int(positives.min())}, {int(positives.max())}].")
        if self.loss == "softmax" and self.repeat_bias is not None:
            return self.repeat_aware_softmax_loss(queries, positives, seen)
        if self.loss == "softmax":
            return self.full_softmax_loss(queries, positives)
        if self.loss == "sampled":
            return self.sampled_softmax_loss(queries, positives)
        return self.binary_loss(queries, positives)

    def full_softmax_loss(self, queries: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ``positives`` [n] over items 1..V-1 for ``queries`` [n, d]."""
        table = self.item_table.weight[1:]
        return softmax_retrieval_loss(queries, table, temperature=self.temperature, reduction="mean",
                                      positive_index=positives - 1)

    def repeat_aware_softmax_loss(self, queries: torch.Tensor, positives: torch.Tensor,
                                  seen: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over items 1..V-1 of logits (q . e_j + b [j in seen row]) / T:
        ``queries`` [n, d], ``positives`` [n], ``seen`` [n, L] item ids each query has read (0 = pad)."""
        logits = queries @ self.item_table.weight.T
        logits = logits + self.repeat_bias * in_history(seen, self.num_items).to(logits.dtype)
        if self.temperature is not None:
            logits = logits / self.temperature
        return F.cross_entropy(logits[:, 1:], positives - 1)

    def _draw(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Ids drawn with replacement from ``negative_probability`` (the model's generator)."""
        count = 1
        for size in shape:
            count *= int(size)
        ids = torch.multinomial(self.negative_probability.double().cpu(), count, replacement=True,
                                generator=self.generator)
        return ids.reshape(shape).to(device)

    def sampled_softmax_loss(self, queries: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """In-batch + ``num_negatives`` sampled negatives with logQ correction (module docstring)."""
        n, S = positives.shape[0], self.num_negatives
        sampled = self._draw((S,), positives.device)
        ids, inverse, counts = torch.unique(torch.cat([positives, sampled]), return_inverse=True,
                                            return_counts=True)
        expected = S * self.negative_probability[ids].double()
        if self.target_probability is not None:
            expected = expected + n * self.target_probability[ids].double()
        return self.task(queries, self.item_embeddings(ids), candidate_ids=ids,
                         candidate_sampling_probability=(expected / (n + S)).to(queries.dtype),
                         positive_index=inverse[:n], candidate_counts=counts,
                         compute_metrics=False, compute_batch_metrics=False)

    def binary_negatives(self, positives: torch.Tensor) -> torch.Tensor:
        """One negative per entry of ``positives`` (from ``negative_weights``), never equal to it."""
        negatives = self._draw(tuple(positives.shape), positives.device)
        clash = negatives == positives
        while bool(clash.any()):   # redraw only the clashes (about 1/V of them each round)
            negatives[clash] = self._draw((int(clash.sum()),), positives.device)
            clash = negatives == positives
        return negatives

    def binary_loss(self, queries: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """SASRec's loss with :meth:`binary_negatives`: mean softplus(-s_pos) + softplus(s_neg)."""
        negatives = self.binary_negatives(positives)
        pos = (queries * self.item_embeddings(positives)).sum(-1)
        neg = (queries * self.item_embeddings(negatives)).sum(-1)
        return (F.softplus(-pos) + F.softplus(neg)).mean()


__all__ = ["LOSSES", "SequentialRetrieval", "in_history", "last_positions"]
