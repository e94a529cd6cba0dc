"""Per-query exclusion lists (e.g. the items each user rated in training).

Stored as CSR: for query key ``u`` the excluded candidate ids are
``indices[indptr[u]:indptr[u + 1]]``. Built once, vectorised; looked up per
batch without Python loops.
"""

from __future__ import annotations

import torch

from .errors import ShapeError


class Exclusions:
    """Candidate ids to exclude for each integer query key.

    Args:
        indptr: [K + 1] row pointers.
        indices: [nnz] candidate ids, sorted and unique within each key.
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor):
        if indptr.dim() != 1 or indices.dim() != 1 or int(indptr[-1]) != indices.shape[0]:
            raise ShapeError("Exclusions needs 1-D indptr and indices with indptr[-1] == len(indices).")
        self.indptr = indptr.long()
        self.indices = indices.long()

    @property
    def num_keys(self) -> int:
        return self.indptr.shape[0] - 1

    @classmethod
    def from_pairs(cls, keys: torch.Tensor, candidate_ids: torch.Tensor,
                   num_keys: int | None = None) -> "Exclusions":
        """Build from parallel arrays of (query key, candidate id); duplicates are dropped.

        Args:
            keys: [n] non-negative integer query keys (e.g. encoded user ids).
            candidate_ids: [n] integer candidate ids (e.g. encoded item ids).
            num_keys: number of keys K (default ``max(keys) + 1``); keys >= K are an error.
        """
        keys = torch.as_tensor(keys).long().reshape(-1)
        ids = torch.as_tensor(candidate_ids).long().reshape(-1)
        if keys.shape != ids.shape:
            raise ShapeError(f"keys and candidate_ids differ in length: {keys.shape[0]} vs {ids.shape[0]}.")
        if keys.numel() and int(keys.min()) < 0:
            raise ShapeError("Exclusion keys must be non-negative integers.")
        k = int(keys.max()) + 1 if keys.numel() else 0
        num_keys = k if num_keys is None else num_keys
        if k > num_keys:
            raise ShapeError(f"An exclusion key ({k - 1}) is >= num_keys ({num_keys}).")
        # Sort by (key, id) and drop repeats; ids shifted so one sort does both.
        span = int(ids.max()) - int(ids.min()) + 1 if ids.numel() else 1
        combined = torch.unique(keys * span + (ids - (int(ids.min()) if ids.numel() else 0)))
        keys_sorted = combined // span
        ids_sorted = combined % span + (int(ids.min()) if ids.numel() else 0)
        counts = torch.bincount(keys_sorted, minlength=num_keys)
        indptr = torch.zeros(num_keys + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr, ids_sorted)

    def pairs(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Excluded ids for a batch of keys, as (row in batch, candidate id) pairs.

        Keys outside [0, K) (e.g. users unseen in training) have no exclusions.
        """
        keys = keys.long()
        valid = (keys >= 0) & (keys < self.num_keys)
        safe = torch.where(valid, keys, torch.zeros_like(keys))
        start = self.indptr[safe]
        counts = torch.where(valid, self.indptr[safe + 1] - start, torch.zeros_like(keys))
        total = int(counts.sum())
        if total == 0:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        rows = torch.repeat_interleave(torch.arange(keys.shape[0]), counts)
        run_begin = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        offsets = torch.arange(total) - run_begin
        return rows, self.indices[torch.repeat_interleave(start, counts) + offsets]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"indptr": self.indptr, "indices": self.indices}
