"""The in-batch softmax retrieval loss, its TFRS logit transforms, and a fused kernel.

With queries q [n, d] and candidates c [m, d] (m >= n; rows n..m-1 are extra
negatives), row i's positive is candidate i and

    logits_ij = (q_i . c_j) / T - log(clip(P_j, 1e-6, 1))      (temperature, logQ)
    logits_ij = -inf   if id_j == id_i and j != i              (accidental hits)
    keep only the positive and the h highest other logits      (hard negatives)
    loss_i    = logsumexp_j(logits_ij) - logits_ii
    loss      = sum_i w_i loss_i            (reduction "sum", TFRS default)
              = sum_i w_i loss_i / n        (reduction "mean", Keras sum_over_batch_size)

TFRS masks accidental hits by adding float32.min / 100; exp() of that is exactly
0 in float32, so -inf gives identical values. The fused kernel computes the
loss and its gradient block by block without materialising the n x m logits:
each block of queries is scored, soft-maxed and back-propagated while it sits
in cache, which is what makes a batch-8192 step several times faster on CPU.
"""

from __future__ import annotations

import torch

_LOG_PROB_FLOOR = 1e-6  # TFRS SamplingProbablityCorrection clips probabilities to [1e-6, 1].


# --- TFRS transforms on materialised [n, m] logits (reference path) -----------

def sampling_probability_correction(logits: torch.Tensor, candidate_sampling_probability: torch.Tensor) -> torch.Tensor:
    """logits - log(clip(p, 1e-6, 1)), p broadcast over rows ([m] probabilities)."""
    return logits - torch.log(torch.clamp(candidate_sampling_probability.to(logits.dtype), _LOG_PROB_FLOOR, 1.0))


def remove_accidental_hits(logits: torch.Tensor, candidate_ids: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) candidates that share the positive's id, except the positive itself.

    Args:
        logits: [n, m]; row i's positive is column i.
        candidate_ids: [m] ids of the candidates.
    """
    n, m = logits.shape
    ids = candidate_ids.reshape(-1)
    duplicate = ids[:n, None] == ids[None, :]
    duplicate[torch.arange(n), torch.arange(n)] = False
    return logits.masked_fill(duplicate, float("-inf"))


def hard_negative_mining(logits: torch.Tensor, num_hard_negatives: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each row's positive and its ``num_hard_negatives`` highest-scoring negatives.

    Returns:
        (logits [n, h + 1], labels [n, h + 1]) like TFRS's HardNegativeMining.
    """
    n, m = logits.shape
    k = min(num_hard_negatives + 1, m)
    boosted = logits.clone()
    boosted[torch.arange(n), torch.arange(n)] = float("inf")
    index = torch.topk(boosted, k, dim=1).indices
    labels = torch.zeros(n, m, dtype=logits.dtype)
    labels[torch.arange(n), torch.arange(n)] = 1.0
    return logits.gather(1, index), labels.gather(1, index)


# --- fused kernel ---------------------------------------------------------------

def _block_rows(num_candidates: int) -> int:
    """Queries per block so that a [block, m] score tile stays around 2 MB."""
    return int(min(1024, max(16, (1 << 19) // max(num_candidates, 1))))


class _FusedSoftmaxLoss(torch.autograd.Function):
    """Forward computes loss and gradients; backward only scales them."""

    @staticmethod
    def forward(ctx, q, c, weight, log_q, ids, positives, log_count, own_count_one,
                temperature, num_hard_negatives, scale, needs_grad):
        n, m = q.shape[0], c.shape[0]
        grad_q = torch.empty_like(q) if needs_grad else None
        grad_c = torch.zeros_like(c) if needs_grad else None
        losses = q.new_empty(n)
        block = _block_rows(m)
        c_t = c.t()
        for s in range(0, n, block):
            e = min(s + block, n)
            r = e - s
            # Query-major tile: the softmax reductions run along contiguous rows (about 25 %
            # faster on CPU than a candidate-major tile reduced across rows).
            logits = q[s:e] @ c_t                         # [r, m], row i <-> query s + i
            if temperature is not None:
                logits.div_(temperature)
            if log_q is not None:
                logits.sub_(log_q)
            # Query s + i's positive sits at (i, s + i), or at (i, positives[s + i]).
            rows = torch.arange(r, device=q.device)
            cols = rows + s if positives is None else positives[s:e]
            positive = logits[rows, cols]
            if log_count is not None:
                # A unique candidate standing for k in-batch copies enters the partition sum k times.
                logits.add_(log_count)
                if own_count_one:  # accidental hits removed: the positive's own copies count once
                    logits[rows, cols] = positive
            if ids is not None:
                hit = ids[cols][:, None] == ids[None, :]
                hit[rows, cols] = False
                logits.masked_fill_(hit, float("-inf"))
            if num_hard_negatives is not None and num_hard_negatives + 1 < m:
                boosted = logits.clone()
                boosted[rows, cols] = float("inf")
                top = torch.topk(boosted, num_hard_negatives + 1, dim=1).indices
                keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, top, True)
                logits.masked_fill_(~keep, float("-inf"))
            peak = logits.amax(dim=1, keepdim=True)
            logits.sub_(peak).exp_()
            total = logits.sum(dim=1)
            losses[s:e] = total.log() + peak[:, 0] - positive
            if needs_grad:
                # d loss_i / d logits_ij = softmax_ij - [j == i]; chain through 1/T and weights.
                row_scale = weight[s:e] * scale if weight is not None else q.new_full((r,), scale)
                if temperature is not None:
                    row_scale = row_scale / temperature
                # softmax (exp / total) and the row scale in one pass, then subtract the label.
                logits.mul_((row_scale / total)[:, None])
                logits.index_put_((rows, cols), -row_scale, accumulate=True)
                torch.mm(logits, c, out=grad_q[s:e])
                grad_c.addmm_(logits.t(), q[s:e])
        weighted = losses * weight if weight is not None else losses
        if needs_grad:
            ctx.save_for_backward(grad_q, grad_c)
        return weighted.sum() * scale

    @staticmethod
    def backward(ctx, grad_output):
        grad_q, grad_c = ctx.saved_tensors
        return (grad_q * grad_output, grad_c * grad_output) + (None,) * 10


def softmax_retrieval_loss(
    query_embeddings: torch.Tensor,
    candidate_embeddings: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    candidate_sampling_probability: torch.Tensor | None = None,
    candidate_ids: torch.Tensor | None = None,
    temperature: float | None = None,
    num_hard_negatives: int | None = None,
    reduction: str = "sum",
    positive_index: torch.Tensor | None = None,
    candidate_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-batch softmax loss (see module docstring), fused and cache-blocked.

    Args:
        query_embeddings: [n, d].
        candidate_embeddings: [m, d], m >= n; candidate i is query i's positive.
        sample_weight: [n] per-query weights.
        candidate_sampling_probability: [m] probabilities for the logQ correction.
        candidate_ids: [m] ids; when given, accidental hits are removed.
        temperature: divide scores by this before the softmax.
        num_hard_negatives: keep only this many hardest negatives per query.
        reduction: "sum" (TFRS) or "mean" (sum / n).
        positive_index: [n] row of query i's positive (default i): e.g. queries of one rank
            against the candidates of the whole distributed batch.
        candidate_counts: [m] the deduplicated form of an in-batch candidate set whose
            duplicates share one embedding: ``candidate_embeddings`` holds each distinct
            candidate once and ``candidate_counts`` how often it occurs in the batch (with
            ``positive_index``). The loss and gradients equal those of the expanded batch (a
            candidate with k copies adds log k to its logit), at m/n of the cost. With
            ``candidate_ids`` (accidental hits) the positive's own copies count once.
            Not combinable with ``num_hard_negatives``.

    Returns:
        Scalar loss. Gradients flow to both embedding tensors (no double backward).
    """
    n = query_embeddings.shape[0]
    scale = 1.0 if reduction == "sum" else 1.0 / max(n, 1)
    needs_grad = torch.is_grad_enabled() and (
        query_embeddings.requires_grad or candidate_embeddings.requires_grad)
    if {query_embeddings.dtype, candidate_embeddings.dtype} & {torch.float16, torch.bfloat16}:
        # Towers may run in reduced precision (autocast); the softmax over the batch does not.
        query_embeddings, candidate_embeddings = query_embeddings.float(), candidate_embeddings.float()
    dtype = query_embeddings.dtype
    weight = None if sample_weight is None else sample_weight.detach().reshape(-1).to(dtype)
    log_q = None
    if candidate_sampling_probability is not None:
        log_q = torch.log(torch.clamp(candidate_sampling_probability.detach().reshape(-1).to(dtype),
                                      _LOG_PROB_FLOOR, 1.0))
    ids = None if candidate_ids is None else candidate_ids.detach().reshape(-1)
    positives = None if positive_index is None else positive_index.detach().reshape(-1).long()
    log_count = None
    own_count_one = False
    if candidate_counts is not None:
        if positives is None or num_hard_negatives is not None:
            raise ValueError("candidate_counts needs positive_index and excludes num_hard_negatives.")
        log_count = torch.log(candidate_counts.detach().reshape(-1).to(dtype))
        own_count_one, ids = ids is not None, None  # ids are distinct: no other copy to mask
    with torch.autocast(query_embeddings.device.type, enabled=False):
        return _FusedSoftmaxLoss.apply(
            query_embeddings, candidate_embeddings, weight, log_q, ids, positives, log_count, own_count_one,
            temperature, num_hard_negatives, scale, needs_grad)
