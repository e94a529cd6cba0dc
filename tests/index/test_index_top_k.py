"""IndexTopK: identical to FactorizedTopK through an exact index; truncated MRR through ANN."""

import numpy as np
import pytest
import torch

from recstack import Exclusions
from recstack.index import BruteForce
from recstack.metrics import FactorizedTopK
from recstack.index.top_k_metric import IndexTopK


def batches(seed=0, n_cand=400, d=8, rows=300):
    g = torch.Generator().manual_seed(seed)
    cand = torch.randn(n_cand, d, generator=g)
    ids = torch.arange(n_cand)
    users = torch.randint(0, 40, (rows,), generator=g)
    user_emb = torch.randn(40, d, generator=g)
    pos = torch.randint(0, n_cand, (rows,), generator=g)
    weights = torch.rand(rows, generator=g)
    return cand, ids, user_emb[users], cand[pos], pos, weights, users


@pytest.mark.parametrize("with_keys", [False, True])
def test_exact_index_gives_identical_numbers(with_keys):
    cand, ids, q, p, pos, w, users = batches()
    excl = Exclusions.from_pairs(users[:50], torch.randint(0, 400, (50,))) if with_keys else None
    ks = (1, 5, 10, 50)
    ref = FactorizedTopK(cand, ids, ks=ks, exclude=excl)
    got = IndexTopK(BruteForce().build(ids, cand), ks=ks, exclude=excl)
    for start in range(0, q.shape[0], 64):
        sl = slice(start, start + 64)
        kwargs = {"query_keys": users[sl]} if with_keys else {}
        ref.update_state(q[sl], p[sl], pos[sl], sample_weight=w[sl], **kwargs)
        got.update_state(q[sl], p[sl], pos[sl], sample_weight=w[sl], **kwargs)
    expected = ref.result()
    result = got.result()
    assert result.pop("factorized_top_k/index") == "brute_force"
    assert result == expected                          # identical, including MRR beyond depth
    assert torch.equal(got.ranks(), ref.ranks())


def test_approximate_index_reports_its_kind_and_truncated_mrr():
    pytest.importorskip("faiss")
    from recstack.index import FaissIVF
    cand, ids, q, p, pos, _, _ = batches(seed=1)
    index = FaissIVF(nlist=8, nprobe=8).build(ids, cand)       # exhaustive: ranks < depth exact
    ks = (1, 5, 10)
    metric = IndexTopK(index, ks=ks, name="ann")
    metric.update_state(q, p, pos)
    ref = FactorizedTopK(cand, ids, ks=ks)
    ref.update_state(q, p, pos)
    exact = ref.result()
    out = metric.result()
    assert out.pop("ann/index") == "faiss_ivf"
    for key, value in exact.items():
        if not key.endswith("mrr"):
            assert out[key.replace("factorized_top_k", "ann")] == pytest.approx(value, abs=1e-12)
    ranks = ref.ranks().numpy()
    truncated = np.where(ranks < 10, 1.0 / (ranks + 1.0), 0.0).mean()
    assert out["ann/mrr"] == pytest.approx(truncated, abs=1e-12)
    assert set(metric.ranks().tolist()) - set(range(10)) <= {-1}


def test_report_index_off_keeps_only_floats():
    cand, ids, q, p, pos, _, _ = batches(seed=2)
    metric = IndexTopK(BruteForce().build(ids, cand), ks=(5,), report_index=False)
    metric.update_state(q, p, pos)
    assert all(isinstance(v, float) for v in metric.result().values())
    metric.reset_state()
    assert metric.result() == {}
