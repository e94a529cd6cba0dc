"""iALS: implicit alternating least squares (Hu, Koren & Volinsky 2008), in the formulation of
Rendle, Krichene, Zhang & Koren 2022 ("Revisiting the Performance of iALS on Item Recommendation
Benchmarks").

User factors W [U, d], item factors H [V, d]; S the observed (user, item) pairs of the training
data (binary: a repeated pair counts once; id 0, the unknown user / item, is never observed and
its factor row stays zero). With ``alpha0 = unobserved_weight``, ``lambda = regularization`` and
``nu = regularization_exp``:

    L(W, H) = sum_{(u,i) in S} (<w_u, h_i> - 1)^2  +  alpha0 * sum_{all u, i} <w_u, h_i>^2
              + lambda * ( sum_u (|I_u| + alpha0 |I|)^nu |w_u|^2  +  sum_i (|U_i| + alpha0 |U|)^nu |h_i|^2 )

where I_u are user u's items, U_i item i's users, |I| = V - 1 and |U| = U - 1 the known ids
(``nu = 0``: plain L2; Rendle et al. recommend ``nu = 1``). L is quadratic in W for fixed H and the
other way round, so a **sweep** solves every user exactly with the items fixed, then every item
with the users fixed; L never increases. The user solve is

    (alpha0 * H^T H + H_{I_u}^T H_{I_u} + lambda_u I) w_u = H_{I_u}^T 1,   lambda_u = lambda (|I_u| + alpha0 |I|)^nu

and the item solve its mirror image. Users (items) without observations solve to w_u = 0.

Vectorised: the rows with observations are sorted by their count and cut into chunks of similar
counts, bounded by ``chunk_elements`` floats per [B, L, d] gather and per [B, d, d] Gram batch;
a chunk gathers its rows' fixed factors padded with a zero row ([B, L, d]), forms every Gram
matrix at once (``bmm``), adds ``alpha0 H^T H`` and the diagonal, and solves the B systems with
one batched Cholesky factorisation (``torch.linalg.cholesky_ex`` / ``cholesky_solve``). The plan
(order, padded index matrices) depends only on the interactions and is computed once per device.

Scoring is the dot product ``user_embeddings(u) . item_embeddings(i)`` = <w_u, h_i>, so
``recommend``, ``similar``, indexes and bundles use the model like any other CF model.
:meth:`fold_in` solves a new user's factors from a history with the item factors fixed (the
user solve above), so a history is scored without retraining.

Training inside ``Model.fit``: :meth:`training_data` is one row (``{"sweep": [0]}``), so an epoch
is one batch; ``compute_loss`` of that batch in training mode runs one sweep (under
``torch.no_grad``, autocast off) and returns L after it as a leaf tensor: backward gives the
factors no gradient, so whatever optimizer ``fit`` holds leaves them alone (SGD, Adagrad and Adam
skip parameters without a gradient). Interaction rows ``{"user", "item", "query_key"}`` are scored
by the retrieval metrics (validation and test).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.columns import Batch, Columns
from ..core.errors import ConfigError, DataError, DivergedError
from ..core.exclusions import Exclusions
from ..core.id_lists import IdLists
from .catalogue_scoring import CatalogueScored

__all__ = ["IALS", "Chunk", "IALSFoldInQuery", "csr_pairs", "fold_in_solve", "solve_rows"]

#: Default bound on the floats of one chunk's gathered factors and of its Gram batch (32 MB in float32).
CHUNK_ELEMENTS = 1 << 23

#: One chunk of rows to solve: (row ids [B], padded indices of the fixed side [B, L] (padding:
#: the index of an appended zero row), observation counts [B]).
Chunk = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def csr_pairs(rows: Any, cols: Any, num_rows: int, num_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr [num_rows + 1], indices) of the distinct pairs (rows[n], cols[n]) with both ids in
    [1, num_rows) x [1, num_cols) (id 0, unknown, and out-of-range ids dropped); indices ascending
    within a row."""
    r = np.asarray(torch.as_tensor(rows).reshape(-1).cpu().numpy(), dtype=np.int64)
    c = np.asarray(torch.as_tensor(cols).reshape(-1).cpu().numpy(), dtype=np.int64)
    keep = (r > 0) & (r < num_rows) & (c > 0) & (c < num_cols)
    keys = np.unique(r[keep] * num_cols + c[keep])
    r, c = keys // num_cols, keys % num_cols
    indptr = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=num_rows), out=indptr[1:])
    return indptr, c


def plan_chunks(indptr: np.ndarray, indices: np.ndarray, pad: int, dim: int,
                chunk_elements: int = CHUNK_ELEMENTS, device: torch.device | str = "cpu") -> list[Chunk]:
    """The chunks that solve every row with observations (see the module docstring): rows sorted by
    count, each chunk's [B, L] index matrix padded with ``pad`` (the zero row's index)."""
    counts = np.diff(indptr)
    order = np.argsort(counts, kind="stable")
    order = order[counts[order] > 0]
    sorted_counts = counts[order]
    limit = max(1, chunk_elements // (dim * dim))            # B x d x d within the budget
    chunks: list[Chunk] = []
    start = 0
    while start < order.shape[0]:
        # The largest B <= limit with B x L x d within the budget (L: the count of the chunk's last row,
        # the largest: counts ascend); at least one row.
        window = sorted_counts[start:start + limit]
        fits = np.arange(1, window.shape[0] + 1) * window * dim <= chunk_elements
        size = max(1, int(np.argmin(fits)) if not fits.all() else window.shape[0])
        rows = order[start:start + size]
        lengths = counts[rows]
        width = int(lengths[-1])
        positions = indptr[rows][:, None] + np.arange(width)[None, :]
        mask = np.arange(width)[None, :] < lengths[:, None]
        idx = np.where(mask, indices[np.minimum(positions, max(indices.shape[0] - 1, 0))], pad)
        chunks.append((torch.from_numpy(rows).to(device), torch.from_numpy(idx).to(device),
                       torch.from_numpy(lengths).to(device)))
        start += size
    return chunks


def fold_in_solve(item_factors: torch.Tensor, rows: Any, ids: Any, num_rows: int, unobserved_weight: float,
                  regularization: float, regularization_exp: float,
                  chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """[num_rows, d] the user solve of each history with the item factors H [V, d] fixed; history
    r holds the item ids ``ids[rows == r]`` (unknown ids and repeats dropped; an empty history
    solves to zeros). One implementation for :meth:`IALS.fold_in` and :class:`IALSFoldInQuery`."""
    num_items, dim = item_factors.shape
    rows = np.asarray(torch.as_tensor(rows).reshape(-1).cpu().numpy(), dtype=np.int64)
    indptr, cols = csr_pairs(rows + 1, ids, num_rows + 1, num_items)   # row r -> r + 1 > 0 (0: unknown)
    chunks = plan_chunks(indptr, cols, num_items, dim, chunk_elements, item_factors.device)
    with torch.no_grad(), torch.autocast(item_factors.device.type, enabled=False):
        return solve_rows(item_factors.detach(), chunks, num_rows + 1, unobserved_weight, regularization,
                          regularization_exp, num_items - 1)[1:]


def solve_rows(fixed: torch.Tensor, chunks: Sequence[Chunk], num_rows: int, unobserved_weight: float,
               regularization: float, regularization_exp: float, num_other: int) -> torch.Tensor:
    """[num_rows, d]: each row's exact solve with ``fixed`` [N, d] (the other side's factors) held:
    (alpha0 F^T F + F_r^T F_r + lambda (n_r + alpha0 num_other)^nu I) x_r = F_r^T 1 for the rows in
    ``chunks`` (their n_r observations index ``fixed``); every other row is 0."""
    dim = fixed.shape[1]
    gram = unobserved_weight * (fixed.T @ fixed)
    padded = torch.cat([fixed, fixed.new_zeros(1, dim)])
    out = fixed.new_zeros(num_rows, dim)
    for rows, idx, counts in chunks:
        gathered = padded[idx]                                              # [B, L, d]
        systems = torch.bmm(gathered.transpose(1, 2), gathered) + gram       # [B, d, d]
        reg = regularization * (counts.to(fixed.dtype) + unobserved_weight * num_other) ** regularization_exp
        systems.diagonal(dim1=1, dim2=2).add_(reg[:, None])
        factor, info = torch.linalg.cholesky_ex(systems)
        if bool(info.any()):
            raise DivergedError("iALS: a user/item system is not positive definite (non-finite factors, or a "
                                "regularization too small for float precision); raise model.regularization.")
        out[rows] = torch.cholesky_solve(gathered.sum(dim=1).unsqueeze(-1), factor).squeeze(-1)
    return out


class IALS(CatalogueScored):
    """iALS matrix factorisation trained by alternating exact solves (see the module docstring).

    Args:
        num_users, num_items: id vocabulary sizes U, V (id 0: unknown, factor row fixed at zero).
        embedding_dim: d.
        regularization: lambda (> 0).
        unobserved_weight: alpha0 (>= 0), the weight of every user-item pair's squared score.
        regularization_exp: nu (>= 0): lambda_u = lambda (|I_u| + alpha0 |I|)^nu; 0 is plain L2.
        init_std: factors ~ N(0, init_std^2) (None: 0.1 / sqrt(d), Rendle et al.'s).
        users, items: [n] training interaction ids (optional; :meth:`set_interactions` later).
        generator: a torch.Generator for the initialisation (None: torch's global RNG).
        dtype: of the factors (float32; float64 for exact comparisons).
        chunk_elements: floats per chunk workspace tensor (memory bound of a sweep).
        catalogue, ks, exclude, per_user_metrics: the retrieval metrics (see CatalogueScored).

    Example:
        >>> model = IALS(num_users, num_items, 64, 0.01, 0.1, 1.0, users=train["user"], items=train["item"])
        >>> losses = model.run_sweeps(16)                  # L after each sweep, non-increasing
        >>> scores = model.fold_in_histories(histories) @ model.item_embeddings(catalogue).T
    """

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64, regularization: float = 0.01,
                 unobserved_weight: float = 0.1, regularization_exp: float = 1.0, init_std: float | None = None,
                 users: Any = None, items: Any = None, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, chunk_elements: int = CHUNK_ELEMENTS,
                 catalogue: torch.Tensor | None = None, ks: Sequence[int] = (1, 5, 10, 50, 100),
                 exclude: Exclusions | None = None, per_user_metrics: bool = False):
        super().__init__(num_items, catalogue, ks, exclude, per_user_metrics)
        if num_users < 1 or num_items < 1 or embedding_dim < 1:
            raise ConfigError(f"IALS needs num_users, num_items and embedding_dim >= 1; got {num_users}, "
                              f"{num_items}, {embedding_dim}")
        for name, value, low, strict in (("regularization", regularization, 0, True),
                                         ("unobserved_weight", unobserved_weight, 0, False),
                                         ("regularization_exp", regularization_exp, 0, False),
                                         ("init_std", init_std, 0, True), ("chunk_elements", chunk_elements, 1, False)):
            if value is not None and not (np.isfinite(value) and (value > low if strict else value >= low)):
                raise ConfigError(f"IALS {name} must be finite and {'>' if strict else '>='} {low}; got {value}")
        self.num_users, self.embedding_dim = int(num_users), int(embedding_dim)
        self.regularization, self.unobserved_weight = float(regularization), float(unobserved_weight)
        self.regularization_exp = float(regularization_exp)
        self.chunk_elements = int(chunk_elements)
        std = 0.1 / embedding_dim ** 0.5 if init_std is None else float(init_std)
        factors = []
        for n in (self.num_users, self.num_items):
            x = torch.randn(n, self.embedding_dim, generator=generator, dtype=torch.float64).to(dtype) * std
            x[0] = 0.0
            factors.append(nn.Parameter(x))
        self.user_factors, self.item_factors = factors
        self.register_buffer("user_indptr", torch.zeros(self.num_users + 1, dtype=torch.long), persistent=False)
        self.register_buffer("user_items", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("item_indptr", torch.zeros(self.num_items + 1, dtype=torch.long), persistent=False)
        self.register_buffer("item_users", torch.zeros(0, dtype=torch.long), persistent=False)
        self._plans: dict[tuple[str, str], list[Chunk]] = {}
        if users is not None or items is not None:
            if users is None or items is None:
                raise ConfigError("IALS: pass both users= and items= (the training interaction ids), or neither.")
            self.set_interactions(users, items)

    # Data ----------------------------------------------------------------------------------
    def set_interactions(self, users: Any, items: Any) -> None:
        """Hold the training pairs (distinct, known ids) in CSR form, by user and by item."""
        device = self.user_factors.device
        indptr, cols = csr_pairs(users, items, self.num_users, self.num_items)
        self.user_indptr, self.user_items = torch.from_numpy(indptr).to(device), torch.from_numpy(cols).to(device)
        order = np.argsort(cols, kind="stable")
        user_of = np.repeat(np.arange(self.num_users), np.diff(indptr))
        item_indptr, rows = csr_pairs(cols[order], user_of[order], self.num_items, self.num_users)
        self.item_indptr, self.item_users = (torch.from_numpy(item_indptr).to(device),
                                             torch.from_numpy(rows).to(device))
        self._plans.clear()

    @property
    def num_observed(self) -> int:
        """|S|, the distinct observed training pairs."""
        return int(self.user_items.numel())

    def training_data(self, interactions: Columns | None = None) -> Columns:
        """``{"sweep": [0]}``: one batch per epoch, whose training step is one sweep (``recstack
        train`` passes its interaction rows; the model already holds them)."""
        if self.num_observed == 0:
            raise DataError("iALS has no training interaction with a known user and item to fit.")
        return Columns({"sweep": torch.zeros(1, dtype=torch.long)})

    def _plan(self, side: str) -> list[Chunk]:
        device = self.user_factors.device
        key = (side, str(device))
        if key not in self._plans:
            if side == "user":
                indptr, indices, pad = self.user_indptr, self.user_items, self.num_items
            else:
                indptr, indices, pad = self.item_indptr, self.item_users, self.num_users
            self._plans[key] = plan_chunks(indptr.cpu().numpy(), indices.cpu().numpy(), pad, self.embedding_dim,
                                           self.chunk_elements, device)
        return self._plans[key]

    # Solves --------------------------------------------------------------------------------
    def _solve(self, fixed: torch.Tensor, chunks: Sequence[Chunk], num_rows: int, num_other: int) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(fixed.device.type, enabled=False):
            return solve_rows(fixed.detach(), chunks, num_rows, self.unobserved_weight, self.regularization,
                              self.regularization_exp, num_other)

    def solve_users(self) -> torch.Tensor:
        """[U, d] every user's exact solve with the current item factors (nothing is changed)."""
        return self._solve(self.item_factors, self._plan("user"), self.num_users, self.num_items - 1)

    def solve_items(self) -> torch.Tensor:
        """[V, d] every item's exact solve with the current user factors (nothing is changed)."""
        return self._solve(self.user_factors, self._plan("item"), self.num_items, self.num_users - 1)

    def sweep(self) -> None:
        """One sweep: all users with the items fixed, then all items with the users fixed."""
        if self.num_observed == 0:
            raise DataError("iALS has no training interactions: set_interactions(users, items) first.")
        with torch.no_grad():
            self.user_factors.copy_(self.solve_users())
            self.item_factors.copy_(self.solve_items())
        self.task.metrics[0].invalidate()

    def run_sweeps(self, sweeps: int) -> list[float]:
        """``sweeps`` sweeps; the objective after each (outside ``fit``: the library's direct path)."""
        out = []
        for _ in range(int(sweeps)):
            self.sweep()
            out.append(float(self.objective()))
        return out

    @torch.no_grad()
    def objective(self) -> torch.Tensor:
        """L(W, H) of the module docstring (a scalar of the factors' dtype)."""
        W, H = self.user_factors.detach(), self.item_factors.detach()
        a0, lam, nu = self.unobserved_weight, self.regularization, self.regularization_exp
        users = torch.repeat_interleave(torch.arange(self.num_users, device=W.device),
                                        self.user_indptr[1:] - self.user_indptr[:-1])
        observed = ((W[users] * H[self.user_items]).sum(dim=1) - 1.0).pow(2).sum()
        unobserved = a0 * ((W.T @ W) * (H.T @ H)).sum()
        user_n = (self.user_indptr[1:] - self.user_indptr[:-1])[1:].to(W.dtype)
        item_n = (self.item_indptr[1:] - self.item_indptr[:-1])[1:].to(W.dtype)
        reg = ((user_n + a0 * (self.num_items - 1)) ** nu * W[1:].pow(2).sum(dim=1)).sum() + \
            ((item_n + a0 * (self.num_users - 1)) ** nu * H[1:].pow(2).sum(dim=1)).sum()
        return observed + unobserved + lam * reg

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        if "sweep" in batch:
            if training:
                self.sweep()
            return self.objective().detach().requires_grad_(training)
        if {"user", "item"} <= batch.keys():
            return self.score_interactions(batch)
        raise ConfigError(f"IALS batches need a 'sweep' column (fit(model.training_data())) or 'user' and 'item' "
                          f"columns (interaction rows to evaluate); got {sorted(batch)}.")

    # Fold-in -------------------------------------------------------------------------------
    def fold_in(self, histories: IdLists) -> torch.Tensor:
        """[B, d] the user solve of each history (IdLists rows of item ids; unknown ids and repeats
        dropped) with the item factors fixed: what the user's factors would be after one more
        user half-sweep with that history as its training items. An empty history gives zeros."""
        rows, ids = histories.pairs()
        return fold_in_solve(self.item_factors, rows, ids, histories.num_rows, self.unobserved_weight,
                             self.regularization, self.regularization_exp, self.chunk_elements)

    fold_in_histories = fold_in

    # Factorised form -----------------------------------------------------------------------
    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user ids -> [B, d] w_u (ids outside [0, U) get zeros)."""
        users = users.long().to(self.user_factors.device)
        known = (users >= 0) & (users < self.num_users)
        return self.user_factors[users.clamp(0, self.num_users - 1)] * known[:, None].to(self.user_factors.dtype)

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """[B] item ids -> [B, d] h_i."""
        return self.item_factors[items.long().to(self.item_factors.device)]


class IALSFoldInQuery(nn.Module):
    """[B, L] left-padded item ids (0 = pad) -> [B, d] each row's iALS user solve with the item
    factors fixed (:func:`fold_in_solve`, what :meth:`IALS.fold_in` gives): the query tower of an
    iALS history bundle, whose candidates are the item factors. State: ``item_factors`` [V, d]."""

    def __init__(self, num_items: int, embedding_dim: int, regularization: float, unobserved_weight: float,
                 regularization_exp: float, chunk_elements: int = CHUNK_ELEMENTS):
        super().__init__()
        self.regularization, self.unobserved_weight = float(regularization), float(unobserved_weight)
        self.regularization_exp, self.chunk_elements = float(regularization_exp), int(chunk_elements)
        self.register_buffer("item_factors", torch.zeros(int(num_items), int(embedding_dim)))

    @classmethod
    def of(cls, model: IALS) -> "IALSFoldInQuery":
        """The fold-in query of a fitted :class:`IALS` (a copy of its item factors)."""
        tower = cls(model.num_items, model.embedding_dim, model.regularization, model.unobserved_weight,
                    model.regularization_exp, model.chunk_elements)
        tower.item_factors = model.item_factors.detach().clone()
        return tower

    def get_config(self) -> dict[str, Any]:
        num_items, dim = self.item_factors.shape
        return {"num_items": int(num_items), "embedding_dim": int(dim), "regularization": self.regularization,
                "unobserved_weight": self.unobserved_weight, "regularization_exp": self.regularization_exp,
                "chunk_elements": self.chunk_elements}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "IALSFoldInQuery":
        return cls(**config)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(items.shape[0])[:, None].expand_as(items.cpu())
        return fold_in_solve(self.item_factors, rows, items, items.shape[0], self.unobserved_weight,
                             self.regularization, self.regularization_exp, self.chunk_elements)
