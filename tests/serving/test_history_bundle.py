"""Next-item bundles: export a SASRec history tower, load it, answer histories like the model."""

import numpy as np
import pytest
import torch

from recstack.layers.sequence import GRU4RecEncoder, SASRecEncoder
from recstack.models.history_tower import HistoryQueryTower
from recstack.serving import ServingSpec, export, load_bundle
from recstack.serving.history import recommend_history


def _bundle(tmp_path, encoder):
    torch.manual_seed(0)
    tower = HistoryQueryTower(encoder).eval()
    V = encoder.num_items
    ident = np.array([f"i{j}" for j in range(1, V)])
    emb = encoder.item_embedding.weight.detach()[1:].numpy().copy()
    pop = np.arange(V - 1, dtype=np.float32)[::-1].copy()
    history = {"max_length": 4, "users": np.array(["u1", "u2"]), "indptr": np.array([0, 3, 3]),
               "items": np.array([2, 0, 5]), "popularity": pop}
    spec = ServingSpec(query_tower=tower, query_inputs="history", kind="sasrec")
    path = export(spec, tmp_path / "b", candidate_identifiers=ident, candidate_embeddings=emb, history=history)
    return tower, emb, pop, ident, load_bundle(path)


@pytest.mark.parametrize("make", [lambda: SASRecEncoder(9, 8, 4, dropout=0.0), lambda: GRU4RecEncoder(9, 8, dropout=0.0)])
def test_round_trip_matches_in_memory_model(tmp_path, make):
    tower, emb, pop, ident, bundle = _bundle(tmp_path, make())
    # history ids -> model ids (position + 1); reference scores by numpy from the in-memory tower
    hist = ["i3", "i1", "nope", "i6", "i2", "i4"]        # 5 known, cut to the latest 4
    model_ids = torch.tensor([[1, 6, 2, 4]])
    q = tower(model_ids).detach().numpy()[0]
    ref = emb @ q
    for p in (2, 0, 5, 1, 3):  # positions of i3 i1 i6 i2 i4: excluded
        ref[p] = -np.inf
    order = np.argsort(-ref, kind="stable")[:3]
    got = recommend_history(bundle, [hist], k=3)[0]
    assert got.dropped == ["nope"]
    assert got.items == ident[order].tolist()
    np.testing.assert_allclose(got.scores, ref[order], rtol=1e-5, atol=1e-6)
    # stored history of u1 (positions 2, 0, 5) equals the explicit history i3 i1 i6
    a = recommend_history(bundle, [None], users=["u1"], k=4)[0]
    b = recommend_history(bundle, [["i3", "i1", "i6"]], k=4)[0]
    assert a.items == b.items
    # an empty or unknown user's history: the popularity ranking
    e = recommend_history(bundle, [None, ["zz"]], users=["nobody", None], k=2)
    assert e[0].items == ["i1", "i2"] and e[1].fallback and e[1].dropped == ["zz"]
    keep = recommend_history(bundle, [["i1"]], k=8, keep_history=True)[0]
    assert "i1" in keep.items and "i1" not in recommend_history(bundle, [["i1"]], k=7)[0].items
