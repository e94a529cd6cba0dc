"""LightGCN (He et al. 2020, "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation"): id embeddings smoothed over the user-item interaction graph.

Graph: the bipartite adjacency of the training pairs over U + V nodes (users first, then item
ids), A = [[0, R], [Rᵀ, 0]] with R the binary user x item matrix, normalised symmetrically:

    Â = D^-1/2 A D^-1/2,   Â_{u, U+i} = Â_{U+i, u} = 1 / sqrt(|N_u| |N_i|)

(a node without edges keeps a zero row). Propagation of the ego embeddings E⁰ [U + V, d]:

    E^{k+1} = Â E^k,   E = (1 / (K + 1)) Σ_{k=0..K} E^k          (LightGCN's α_k = 1 / (K + 1))

and score(u, i) = E_u · E_{U+i}. Training: BPR with one sampled negative j per positive (u, i),
drawn uniformly from the catalogue and redrawn (a few rounds) when it is one of u's training items,

    loss = -(1/B) Σ log σ(s_ui - s_uj) + l2 · (1/2B) Σ (||E⁰_u||² + ||E⁰_i||² + ||E⁰_j||²)

(the paper's L2 on the *ego* embeddings of the batch, as its reference code; RecBole's default uses
unsquared norms). The whole graph is propagated for every training batch, as in the paper.

The propagated embeddings are also persistent buffers (``user_final``, ``item_final``): computed
once after each change of the ego weights (the parameters' version counters say when) and saved
in every ``state_dict``, so a model rebuilt without its graph (a saved run) scores exactly as the
trained one did.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.columns import Batch
from ..core.errors import ConfigError, DataError
from ..core.exclusions import Exclusions
from .catalogue_scoring import CatalogueScored

__all__ = ["LightGCN", "as_csr", "bpr_loss", "normalized_adjacency", "propagate"]

#: Redraws of a sampled negative that is one of the user's training items (then it is kept: on a
#: user who has seen nearly everything a few collisions cost less than an unbounded loop).
NEGATIVE_REDRAWS = 10


def normalized_adjacency(users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph of the (user, item) pairs: a coalesced sparse COO
    tensor [U + V, U + V] (repeated pairs count once; item node i is row U + i)."""
    users, items = torch.as_tensor(users).long().reshape(-1), torch.as_tensor(items).long().reshape(-1)
    if users.shape != items.shape:
        raise DataError(f"got {users.numel()} users but {items.numel()} items")
    if users.numel() and (int(users.min()) < 0 or int(users.max()) >= num_users
                          or int(items.min()) < 0 or int(items.max()) >= num_items):
        raise DataError(f"user ids must lie in [0, {num_users}) and item ids in [0, {num_items})")
    keys = torch.unique(users * num_items + items)
    u, i = keys // num_items, keys % num_items
    deg_u = torch.bincount(u, minlength=num_users).double()
    deg_i = torch.bincount(i, minlength=num_items).double()
    w = (deg_u[u] * deg_i[i]).rsqrt().float()
    rows = torch.cat([u, num_users + i])
    cols = torch.cat([num_users + i, u])
    n = num_users + num_items
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.cat([w, w]), (n, n),
                                   check_invariants=True).coalesce()


class _SymmetricSpMM(torch.autograd.Function):
    """Â X for a symmetric sparse Â, differentiable in X only: ∂L/∂X = Âᵀ G = Â G.

    ``torch.sparse.mm`` would transpose (and re-sort) Â in every backward pass; with Â symmetric the
    backward is the forward product again, which halves the cost of a training step's propagation."""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adjacency = adjacency
        return adjacency @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
        return None, ctx.adjacency @ grad


def as_csr(adjacency: torch.Tensor) -> torch.Tensor:
    """``adjacency`` in sparse CSR layout: the row-compressed sparse x dense product is about 3x
    faster than COO's on CPU (a LightGCN epoch on MovieLens 100K: 0.5 s instead of 1.6 s, one thread).
    torch flags CSR as beta once per process; the products used here are long-standing ones."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return adjacency.to_sparse_csr()


def propagate(ego: torch.Tensor, adjacency: torch.Tensor, num_layers: int) -> torch.Tensor:
    """[N, d] ego embeddings -> [N, d] mean of E⁰ .. E^K with E^{k+1} = Â E^k (differentiable in ego).

    ``adjacency``: the symmetric Â [N, N] of :func:`normalized_adjacency`, sparse COO or CSR (the
    backward pass relies on Âᵀ = Â)."""
    total, layer = ego, ego
    for _ in range(num_layers):
        layer = _SymmetricSpMM.apply(adjacency, layer)
        total = total + layer
    return total / (num_layers + 1)


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """-mean log σ(positive - negative) over [B] score pairs (log-sigmoid: stable for large gaps)."""
    return -F.logsigmoid(positive - negative).mean()


class LightGCN(CatalogueScored):
    """LightGCN over ``num_users`` x ``num_items`` ids (0 = unknown on both sides).

    Args:
        num_users, num_items: id spaces (embedding rows).
        users, items: [n] training pairs (the graph and the negatives' exclusions); None when
            rebuilding a saved model (it then scores from its saved propagated embeddings and
            cannot train).
        embedding_dim: d (RecBole: 64).
        num_layers: K propagation layers (paper and RecBole: 2 or 3; 0 is matrix factorisation).
        l2: weight of the batch's ego-embedding L2 term (see the module docstring).
        init_std: ego embeddings ~ Normal(0, init_std) (LightGCN's code: 0.1).
        catalogue, ks, exclude, per_user_metrics: the retrieval metrics (see CatalogueScored).

    Data:
        ``fit`` trains on interaction rows ``{"user", "item"}`` (BPR with sampled negatives); in
        evaluation the same rows update the retrieval metrics.
    """

    def __init__(self, num_users: int, num_items: int, users: torch.Tensor | None, items: torch.Tensor | None,
                 embedding_dim: int = 64, num_layers: int = 2, l2: float = 1e-4, init_std: float = 0.1,
                 catalogue: torch.Tensor | None = None, ks: Sequence[int] = (1, 5, 10, 50, 100),
                 exclude: Exclusions | None = None, per_user_metrics: bool = False):
        super().__init__(num_items, catalogue, ks, exclude, per_user_metrics)
        if embedding_dim < 1 or num_layers < 0 or l2 < 0 or init_std <= 0:
            raise ConfigError(f"LightGCN needs embedding_dim >= 1, num_layers >= 0, l2 >= 0 and init_std > 0; got "
                              f"{embedding_dim}, {num_layers}, {l2}, {init_std}")
        self.num_users, self.num_layers, self.l2 = int(num_users), int(num_layers), float(l2)
        self.user_embedding = nn.Embedding(self.num_users, embedding_dim)
        self.item_embedding = nn.Embedding(self.num_items, embedding_dim)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, 0.0, init_std)
        self.register_buffer("user_final", torch.zeros(self.num_users, embedding_dim))
        self.register_buffer("item_final", torch.zeros(self.num_items, embedding_dim))
        self._fresh_for: tuple[int, ...] | None = None   # the ego weights' versions the buffers hold
        self.has_graph = users is not None and items is not None
        if self.has_graph:
            adjacency = normalized_adjacency(users, items, self.num_users, self.num_items)
            self.register_buffer("adjacency", as_csr(adjacency), persistent=False)
            # Sorted user * V + item keys of the training pairs: membership tests for the negatives.
            self.register_buffer("pair_keys", torch.unique(torch.as_tensor(users).long() * self.num_items
                                                           + torch.as_tensor(items).long()), persistent=False)
            self.refresh()

    # Propagation ---------------------------------------------------------------------------
    def ego(self) -> torch.Tensor:
        """[U + V, d] the ego embeddings E⁰, users first."""
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight])

    def _require_graph(self) -> None:
        if not self.has_graph:
            raise ConfigError("this LightGCN was rebuilt without its training graph (a saved run): it scores from "
                              "its saved embeddings and cannot be trained further; train a new run instead.")

    def propagated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users [U, d], items [V, d]) propagated from the current weights (with gradients)."""
        self._require_graph()
        out = propagate(self.ego(), self.adjacency, self.num_layers)
        return out[:self.num_users], out[self.num_users:]

    def _versions(self) -> tuple[int, ...]:
        return (self.user_embedding.weight._version, self.item_embedding.weight._version)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute ``user_final`` / ``item_final`` if the ego weights changed since the last time."""
        if not self.has_graph or self._fresh_for == self._versions():
            return
        users, items = self.propagated()
        self.user_final.copy_(users)
        self.item_final.copy_(items)
        self._fresh_for = self._versions()

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        self.refresh()   # every checkpoint and model.pt holds the embeddings of the weights saved with them
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._fresh_for = self._versions() if not self.has_graph else None

    # Training ------------------------------------------------------------------------------
    def sample_negatives(self, users: torch.Tensor) -> torch.Tensor:
        """[B] catalogue items drawn uniformly, redrawn up to NEGATIVE_REDRAWS times where the draw is
        one of the user's training items."""
        catalogue = self.catalogue_ids.to(users.device)
        negatives = catalogue[torch.randint(0, catalogue.numel(), users.shape, device=users.device)]
        keys = self.pair_keys
        for _ in range(NEGATIVE_REDRAWS):
            query = users * self.num_items + negatives
            pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
            hit = keys[pos] == query
            if not bool(hit.any()):
                break
            redraw = catalogue[torch.randint(0, catalogue.numel(), (int(hit.sum()),), device=users.device)]
            negatives = negatives.masked_scatter(hit, redraw)
        return negatives

    def bpr_batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """BPR + L2 on the batch's ego embeddings (module docstring) for [B] triples."""
        all_users, all_items = self.propagated()
        u = all_users[users]
        pos = (u * all_items[positives]).sum(1)
        neg = (u * all_items[negatives]).sum(1)
        reg = (self.user_embedding.weight[users].pow(2).sum() + self.item_embedding.weight[positives].pow(2).sum()
               + self.item_embedding.weight[negatives].pow(2).sum()) / (2 * users.shape[0])
        return bpr_loss(pos, neg) + self.l2 * reg

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        if not {"user", "item"} <= batch.keys():
            raise ConfigError(f"LightGCN batches need 'user' and 'item' columns; got {sorted(batch)}.")
        if not training:
            return self.score_interactions(batch)
        self._require_graph()
        users, items = batch["user"].long(), batch["item"].long()
        return self.bpr_batch_loss(users, items, self.sample_negatives(users))

    # Factorised form -----------------------------------------------------------------------
    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user ids -> [B, d] propagated embeddings (ids outside [0, U): zeros)."""
        self.refresh()
        users = users.long().to(self.user_final.device)
        known = (users >= 0) & (users < self.num_users)
        return self.user_final[users.clamp(0, self.num_users - 1)] * known[:, None]

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """[B] item ids -> [B, d] propagated embeddings."""
        self.refresh()
        return self.item_final[items.long().to(self.item_final.device)]
