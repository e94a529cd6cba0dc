"""Data-parallel training on torch.distributed (gloo on CPU, NCCL on GPU), launched by torchrun.

The model is replicated; every rank reads the same global batches (the epoch order is a
pure function of seed and epoch) and keeps a contiguous share of each one
(:class:`ShardedSource`). Retrieval models then score their local queries against the
candidates of the **whole** global batch: the batch's candidate rows (ids and features,
not embeddings) are all-gathered and every rank runs the candidate tower on them, so the
in-batch negatives and the loss are those of one process with the same global batch.
With the loss summed over rows (TFRS's default; "mean" is rescaled to match), summing the
ranks' gradients (:func:`all_reduce_gradients`) gives the single-process gradient; the
regularisation term is added on rank 0 only. Epoch losses and metric states are reduced
across ranks, so every rank reports the single-process numbers.

Usage: ``torchrun --nproc-per-node 2 my_script.py`` with :func:`init_from_env` at the top,
or ``recstack train CONFIG --nproc 2``.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
from collections.abc import Iterator, Mapping

import torch
import torch.distributed as dist

from .columns import Batch, BatchSource
from .errors import ConfigError

_SHARDING = False  # True inside fit/evaluate while batches are sharded across ranks


def world_size() -> int:
    """Number of processes (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def init_from_env(backend: str | None = None, timeout_s: float = 600.0) -> bool:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT). Returns False (and does nothing) outside torchrun or with WORLD_SIZE=1.

    ``backend``: "gloo" (CPU, the default without CUDA) or "nccl" (GPU).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; train with one process.")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def shutdown(synchronize: bool | None = None) -> None:
    """Leave the process group (if one was joined).

    With ``synchronize`` every rank first waits at a barrier for the others, so no rank tears
    its gloo connections down while a peer is still using them: without it, a rank that
    finished first sometimes aborted in the teardown ("terminate called without an active
    exception", SIGABRT; about 1 run in 6 of ``recstack train --nproc 2`` on Python 3.13).
    By default it synchronizes unless an exception is propagating (``shutdown()`` in a
    ``finally`` block): a failing rank must leave at once, not wait at a barrier its peers,
    stuck in another collective, never reach.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if synchronize if synchronize is not None else sys.exc_info()[1] is None:
        dist.barrier()
    dist.destroy_process_group()


def sharding_active() -> bool:
    """Whether batches are currently sharded across several ranks (inside fit/evaluate)."""
    return _SHARDING


@contextlib.contextmanager
def sharding(enabled: bool = True) -> Iterator[None]:
    """Mark a region (an epoch of fit, an evaluation) in which every rank holds a shard of each batch."""
    global _SHARDING
    previous, _SHARDING = _SHARDING, enabled and world_size() > 1
    try:
        yield
    finally:
        _SHARDING = previous


class ShardedSource:
    """This rank's contiguous share of every global batch of ``source``.

    A global batch of g rows gives rank r the rows [r * ceil(g / w), (r + 1) * ceil(g / w)),
    so the concatenation of the shards in rank order is the global batch (a rank may get
    fewer, or no, rows of a short last batch).
    """

    def __init__(self, source: BatchSource, rank_: int | None = None, world: int | None = None):
        self.source = source
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world

    @property
    def num_rows(self) -> int:
        return self.source.num_rows

    def num_batches(self, batch_size: int, drop_remainder: bool = False) -> int:
        return self.source.num_batches(batch_size, drop_remainder)

    def epoch_batches(self, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                      drop_remainder: bool = False) -> Iterator[Batch]:
        for batch in self.source.epoch_batches(batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                               drop_remainder=drop_remainder):
            rows = next(iter(batch.values())).shape[0]
            share = math.ceil(rows / self.world)
            start = min(self.rank * share, rows)
            yield {name: column[start:start + share] for name, column in batch.items()}


def gather_rows(columns: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """All ranks' rows of ``columns`` concatenated in rank order, and this rank's row offset.

    Shards may differ in length (a short last batch): lengths are exchanged first and every
    column is padded to the longest shard for ``all_gather``. No autograd: gather inputs
    (ids, features), not embeddings.
    """
    names = sorted(columns)
    local = columns[names[0]].shape[0]
    device = columns[names[0]].device
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([local], device=device))
    lengths = [int(s) for s in sizes]
    longest = max(lengths)
    out: dict[str, torch.Tensor] = {}
    for name in names:
        column = columns[name].detach()
        padded = column.new_zeros((longest, *column.shape[1:]))
        padded[:local] = column
        parts = [torch.empty_like(padded) for _ in lengths]
        dist.all_gather(parts, padded.contiguous())
        out[name] = torch.cat([part[:n] for part, n in zip(parts, lengths)])
    return out, sum(lengths[:rank()])


def gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' tensors of possibly different lengths, concatenated in rank order."""
    return gather_rows({"x": tensor})[0]["x"]


def all_reduce_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``parameters`` over ranks: dense ones in one flat all-reduce; sparse ones
    (embeddings with ``sparse=True``) by gathering every rank's (row, value) pairs, so the cost
    follows the rows the batch touched, not the table size."""
    if world_size() == 1:
        return
    dense = [p.grad for p in parameters if p.grad is not None and not p.grad.is_sparse]
    if dense:
        flat = torch.cat([g.reshape(-1) for g in dense])
        dist.all_reduce(flat)
        offset = 0
        for g in dense:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
    for p in parameters:
        if p.grad is not None and p.grad.is_sparse:
            local = p.grad.coalesce()
            rows = gather_tensor(local.indices()[0])
            values = gather_tensor(local.values())
            p.grad = torch.sparse_coo_tensor(rows[None], values, local.shape).coalesce()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Elementwise sum of a list of floats over ranks (float64)."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


__all__ = ["ShardedSource", "all_reduce_gradients", "all_reduce_sum", "gather_rows",
           "gather_tensor", "init_from_env", "is_main_process", "rank", "sharding", "sharding_active", "shutdown",
           "world_size"]
