"""Retrieval task loss vs an independent numpy implementation of TFRS's Retrieval.call."""

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError, ShapeError
from recstack.tasks import Retrieval, softmax_cross_entropy

MIN_FLOAT = np.finfo(np.float32).min / 100.0  # TFRS's accidental-hit mask value
MAX_FLOAT = np.finfo(np.float32).max / 100.0


def numpy_tfrs_loss(q, c, weight=None, prob=None, ids=None, temperature=None, hard=None, reduction="sum"):
    """TFRS Retrieval.call in float64 numpy; returns (loss, dloss/dq, dloss/dc)."""
    n, m = q.shape[0], c.shape[0]
    scores = q @ c.T
    labels = np.eye(n, m)
    scale_t = 1.0 if temperature is None else 1.0 / temperature
    logits = scores * scale_t
    if prob is not None:
        logits = logits - np.log(np.clip(prob, 1e-6, 1.0))[None, :]
    if ids is not None:
        dup = (ids[:n, None] == ids[None, :]).astype(float) - labels
        logits = logits + dup * MIN_FLOAT
    keep = np.ones((n, m), dtype=bool)
    if hard is not None:
        k = min(hard + 1, m)
        boosted = logits + labels * MAX_FLOAT
        keep[:] = False
        for i in range(n):
            keep[i, np.argsort(-boosted[i], kind="stable")[:k]] = True
    masked = np.where(keep, logits, -np.inf)
    peak = masked.max(axis=1, keepdims=True)
    prob_sm = np.exp(masked - peak)
    prob_sm /= prob_sm.sum(axis=1, keepdims=True)
    per_row = -np.log(prob_sm[np.arange(n), np.arange(n)])
    w = np.ones(n) if weight is None else weight
    scale = 1.0 if reduction == "sum" else 1.0 / n
    loss = (per_row * w).sum() * scale
    dlogits = (prob_sm - labels) * (w * scale)[:, None] * scale_t
    return loss, dlogits @ c, dlogits.T @ q


def run(task, q, c, **kwargs):
    qt = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    ct = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    kw = {k: torch.tensor(v) for k, v in kwargs.items()}
    loss = task(qt, ct, **kw)
    loss.backward()
    return loss.item(), qt.grad.numpy(), ct.grad.numpy()


@pytest.fixture
def embeddings():
    rng = np.random.default_rng(0)
    return rng.normal(size=(7, 4)), rng.normal(size=(7, 4))


CASES = {
    "plain": ({}, {}),
    "temperature": ({"temperature": 0.2}, {}),
    "sample_weight": ({}, {"sample_weight": np.array([0.5, 1.0, 2.0, 0.0, 1.5, 1.0, 0.3])}),
    "sampling_probability": ({}, {"candidate_sampling_probability": np.array([0.1, 0.5, 1e-9, 0.2, 0.9, 0.05, 0.3])}),
    "accidental_hits": ({"remove_accidental_hits": True}, {"candidate_ids": np.array([3, 1, 3, 2, 1, 5, 3])}),
    "hard_negatives": ({"num_hard_negatives": 2}, {}),
    "mean": ({"reduction": "mean"}, {"sample_weight": np.array([1.0, 2, 3, 4, 5, 6, 7])}),
    "everything": ({"temperature": 0.5, "num_hard_negatives": 3, "remove_accidental_hits": True, "reduction": "mean"},
                   {"candidate_ids": np.array([3, 1, 3, 2, 1, 5, 3]),
                    "candidate_sampling_probability": np.array([0.1, 0.5, 0.01, 0.2, 0.9, 0.05, 0.3]),
                    "sample_weight": np.array([0.5, 1.0, 2.0, 0.0, 1.5, 1.0, 0.3])}),
}


def assert_case_matches_numpy(case: str, q: np.ndarray, c: np.ndarray) -> None:
    """The fused loss and gradients of CASES[case] equal the numpy TFRS reference."""
    init, call = CASES[case]
    loss, gq, gc = run(Retrieval(**init), q, c, **call)
    ref_loss, ref_gq, ref_gc = numpy_tfrs_loss(
        q, c, weight=call.get("sample_weight"), prob=call.get("candidate_sampling_probability"),
        ids=call.get("candidate_ids") if init.get("remove_accidental_hits") else None,
        temperature=init.get("temperature"), hard=init.get("num_hard_negatives"),
        reduction=init.get("reduction", "sum"))
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    np.testing.assert_allclose(gq, ref_gq, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gc, ref_gc, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_fused_loss_and_gradients_match_numpy(case, embeddings):
    q, c = embeddings
    assert_case_matches_numpy(case, q, c)


@pytest.mark.parametrize("case", list(CASES))
def test_every_option_is_exact_when_queries_span_several_blocks(case, embeddings, monkeypatch):
    """Blocks of 3 queries (7 queries: blocks of 3, 3, 1): offsets into weights, positives,
    ids and hard negatives must follow each block."""
    import recstack.layers.retrieval_loss as retrieval_loss

    monkeypatch.setattr(retrieval_loss, "_block_rows", lambda m: 3)
    q, c = embeddings
    assert_case_matches_numpy(case, q, c)


@pytest.mark.parametrize("case", list(CASES))
def test_custom_loss_path_matches_fused(case, embeddings):
    q, c = embeddings
    init, call = CASES[case]
    reduction = init.get("reduction", "sum")
    fused = run(Retrieval(**init), q, c, **call)
    materialised = run(Retrieval(loss=lambda y, s, w: softmax_cross_entropy(y, s, w, reduction), **init), q, c, **call)
    assert materialised[0] == pytest.approx(fused[0], rel=1e-10)
    np.testing.assert_allclose(materialised[1], fused[1], rtol=1e-9, atol=1e-12)


def test_extra_negatives_beyond_the_queries():
    rng = np.random.default_rng(1)
    q, c = rng.normal(size=(3, 5)), rng.normal(size=(8, 5))
    loss, gq, gc = run(Retrieval(), q, c)
    ref = numpy_tfrs_loss(q, c)
    assert loss == pytest.approx(ref[0], rel=1e-10)
    np.testing.assert_allclose(gc, ref[2], rtol=1e-9, atol=1e-12)


def test_large_batch_uses_several_blocks_and_float32():
    # 3000 queries x 3000 candidates spans several fused blocks.
    rng = np.random.default_rng(2)
    q, c = rng.normal(size=(3000, 8)) * 0.3, rng.normal(size=(3000, 8)) * 0.3
    qt = torch.tensor(q, dtype=torch.float32, requires_grad=True)
    ct = torch.tensor(c, dtype=torch.float32, requires_grad=True)
    loss = Retrieval()(qt, ct)
    loss.backward()
    ref_loss, ref_gq, ref_gc = numpy_tfrs_loss(q, c)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(qt.grad.numpy(), ref_gq, atol=1e-4)
    np.testing.assert_allclose(ct.grad.numpy(), ref_gc, atol=1e-4)


def test_loss_without_grad_has_same_value():
    rng = np.random.default_rng(3)
    q, c = torch.tensor(rng.normal(size=(5, 3))), torch.tensor(rng.normal(size=(5, 3)))
    with torch.no_grad():
        value = Retrieval()(q, c).item()
    assert value == pytest.approx(numpy_tfrs_loss(q.numpy(), c.numpy())[0], rel=1e-10)


def test_mismatched_embedding_width_is_a_clear_error():
    with pytest.raises(ShapeError, match="dimension 4 but candidate embeddings 3"):
        Retrieval()(torch.zeros(2, 4), torch.zeros(2, 3))


def test_fewer_candidates_than_queries_is_an_error():
    with pytest.raises(ShapeError, match="only 2 candidates"):
        Retrieval()(torch.zeros(3, 4), torch.zeros(2, 4))


def test_accidental_hits_need_ids():
    with pytest.raises(ConfigError, match="candidate_ids"):
        Retrieval(remove_accidental_hits=True)(torch.zeros(2, 4), torch.zeros(2, 4))


def test_wrong_length_sample_weight():
    with pytest.raises(ShapeError, match="sample_weight must have 2 entries"):
        Retrieval()(torch.zeros(2, 4), torch.zeros(2, 4), sample_weight=torch.ones(3))


def test_bad_reduction():
    with pytest.raises(ConfigError, match="reduction"):
        Retrieval(reduction="avg")


@pytest.mark.parametrize("case", list(CASES))
def test_deduplicated_candidates_equal_the_expanded_batch(case):
    """positive_index/candidate_counts: each distinct candidate once; the loss and gradients must equal
    TFRS's on the expanded batch where duplicates are separate (identical) rows."""
    rng = np.random.default_rng(1)
    ids = np.array([3, 1, 3, 2, 1, 5, 3])            # 4 distinct candidates, duplicates of 3 and 1
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    q, cu = rng.normal(size=(7, 4)), rng.normal(size=(len(unique), 4))
    init, call = CASES[case]
    call = {k: v for k, v in call.items() if k != "candidate_ids"}
    prob_u = None
    if "candidate_sampling_probability" in call:   # a per-candidate quantity: one value per id
        prob_u = np.array([0.1, 0.5, 0.01, 0.2])
        call["candidate_sampling_probability"] = prob_u
    ref_loss, ref_gq, ref_gc = numpy_tfrs_loss(
        q, cu[inverse], weight=call.get("sample_weight"),
        prob=None if prob_u is None else prob_u[inverse],
        ids=ids if init.get("remove_accidental_hits") else None,
        temperature=init.get("temperature"), hard=init.get("num_hard_negatives"),
        reduction=init.get("reduction", "sum"))
    ref_gcu = np.zeros_like(cu)
    np.add.at(ref_gcu, inverse, ref_gc)            # duplicates' gradients land on their one row
    loss, gq, gcu = run(Retrieval(**init), q, cu, candidate_ids=unique, positive_index=inverse,
                        candidate_counts=counts, **call)
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    np.testing.assert_allclose(gq, ref_gq, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gcu, ref_gcu, rtol=1e-9, atol=1e-12)


def test_deduplicated_candidates_check_their_counts():
    q, c = torch.randn(4, 3), torch.randn(2, 3)
    with pytest.raises(ShapeError, match="sum to at least the number of queries"):
        Retrieval()(q, c, positive_index=torch.tensor([0, 1, 0, 1]), candidate_counts=torch.tensor([2, 1]))
    with pytest.raises(ShapeError, match="one per query"):
        Retrieval()(q, c, positive_index=torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="plain in-batch form"):
        Retrieval(num_hard_negatives=1)(q, c, positive_index=torch.tensor([0, 1, 0, 1]))


def test_positive_index_scores_a_subset_of_queries_against_all_candidates():
    """Queries 2..3 of a batch of 5 against all 5 candidates (one rank's share of a distributed batch)
    give those rows' terms of the full batch's loss, with accidental hits removed."""
    rng = np.random.default_rng(3)
    q, c = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    ids = np.array([4, 1, 4, 2, 1])
    task = Retrieval(remove_accidental_hits=True)
    full = [run(task, q[[i]], c, candidate_ids=ids, positive_index=np.array([i]))[0] for i in range(5)]
    ref_loss, _, _ = numpy_tfrs_loss(q, c, ids=ids)
    assert sum(full) == pytest.approx(ref_loss, rel=1e-10)
    part, gq, gc = run(task, q[2:4], c, candidate_ids=ids, positive_index=np.array([2, 3]))
    assert part == pytest.approx(full[2] + full[3], rel=1e-10)


def test_deduplicated_candidates_across_several_blocks():
    rng = np.random.default_rng(2)
    ids = rng.zipf(1.5, size=2500) % 700            # popular ids repeat, as in real batches
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    q, cu = rng.normal(size=(2500, 8)) * 0.3, rng.normal(size=(len(unique), 8)) * 0.3
    weight = rng.uniform(0.5, 2.0, size=2500)
    task = Retrieval(remove_accidental_hits=True, temperature=0.7)
    expanded = run(task, q, cu[inverse], candidate_ids=unique[inverse], sample_weight=weight)
    deduplicated = run(task, q, cu, candidate_ids=unique, positive_index=inverse, candidate_counts=counts,
                       sample_weight=weight)
    gcu = np.zeros_like(cu)
    np.add.at(gcu, inverse, expanded[2])
    assert deduplicated[0] == pytest.approx(expanded[0], rel=1e-10)
    np.testing.assert_allclose(deduplicated[1], expanded[1], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(deduplicated[2], gcu, rtol=1e-8, atol=1e-12)
