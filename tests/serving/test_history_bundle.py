"""Next-item bundles: export a SASRec history tower, load it, answer histories like the model."""

import json

import numpy as np
import pytest
import torch

from recstack.core.errors import ChecksumError

from recstack.layers.sequence import GRU4RecEncoder, SASRecEncoder
from recstack.models.history_tower import HistoryQueryTower
from recstack.serving import ServingSpec, export, load_bundle
from recstack.serving.history import recommend_history

from .test_hostile_bundles import tamper


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


# -- hostile next-item bundles: only listed files, shapes from the manifest, positions in range ---------
@pytest.fixture
def history_bundle(tmp_path):
    return _bundle(tmp_path, SASRecEncoder(9, 8, 4, dropout=0.0))[-1].directory


def _tampered(path, tmp_path, edit):
    """(the error loading refuses with, the tampered copy re-hashed as an attacker would)."""
    return ChecksumError, tamper(path, tmp_path, edit)


def test_history_positions_outside_the_catalogue_are_refused(history_bundle, tmp_path):
    def edit(manifest, root):
        items = np.load(root / "history" / "items.npy")
        items[0] = 10**9
        np.save(root / "history" / "items.npy", items)
    error, root = _tampered(history_bundle, tmp_path, edit)
    with pytest.raises(error, match="outside the"):
        load_bundle(root)


def test_a_claimed_history_count_the_files_do_not_hold_is_refused(history_bundle, tmp_path):
    def edit(manifest, root):
        manifest["history"]["num_items"] = 10**9
    error, root = _tampered(history_bundle, tmp_path, edit)
    with pytest.raises(error):
        load_bundle(root)


def test_an_unlisted_history_file_is_refused(history_bundle, tmp_path):
    def edit(manifest, root):
        del manifest["files"]["history/popularity.npy"]
    error, root = _tampered(history_bundle, tmp_path, edit)
    with pytest.raises(error):
        load_bundle(root)


def test_non_finite_popularity_is_refused(history_bundle, tmp_path):
    def edit(manifest, root):
        pop = np.load(root / "history" / "popularity.npy")
        pop[0] = np.nan
        np.save(root / "history" / "popularity.npy", pop)
    error, root = _tampered(history_bundle, tmp_path, edit)
    with pytest.raises(error, match="non-finite"):
        load_bundle(root)


def test_an_encoder_claiming_a_trillion_items_is_refused_before_allocating(history_bundle, tmp_path):
    def edit(manifest, root):
        tower = json.loads((root / "query_tower.json").read_text())
        tower["config"]["encoder"]["config"]["num_items"] = 10**12
        (root / "query_tower.json").write_text(json.dumps(tower))
    error, root = _tampered(history_bundle, tmp_path, edit)
    with pytest.raises(error, match="1000000000000"):
        load_bundle(root)


def test_an_encoder_with_item_features_cannot_be_exported(tmp_path):
    from recstack.core.errors import ConfigError
    from recstack.models.tower_codec import tower_config

    encoder = SASRecEncoder(9, 8, 4, feature_encoders={"genre": torch.nn.Embedding(3, 8)})
    with pytest.raises(ConfigError, match="feature inputs"):
        tower_config(HistoryQueryTower(encoder))
