"""Bundles: round trips against the in-memory model, checksums, cold start, item-to-item, ratings."""

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from recstack.core.errors import ChecksumError, ConfigError, DataError
from recstack.features import StringLookup
from recstack.index import BruteForce
from recstack.layers import MLP, Embedding
from recstack.serving import (
    ServingSpec,
    UnknownFieldError,
    UnknownItemError,
    export,
    load_bundle,
    read_manifest,
)

from .conftest import TITLES, USERS


@torch.no_grad()
def in_memory(model, features, users):
    """Query embeddings [B, d] and candidate embeddings [C, d] straight from the model."""
    model.eval()
    q = model.query_tower(features.transform({"user_id": users, "movie_title": ["x"] * len(users)})["user_id"])
    c = model.candidate_tower(features["movie_title"].transform(TITLES))
    return q, c


def seen_positions(interactions, user):
    titles = interactions.loc[interactions.user_id == user, "movie_title"].unique()
    return [TITLES.index(t) for t in titles]


def test_round_trip_equals_the_in_memory_model(bundle_dir, model, features, interactions):
    bundle = load_bundle(bundle_dir)
    users = ["u0", "u3", "u49", "u12"]
    q, c = in_memory(model, features, users)
    scores, pos = BruteForce().build(None, c).search(q, k=10)
    recs = bundle.recommend([{"user_id": u} for u in users], k=10, exclude_seen=False)
    for r, rec in enumerate(recs):
        assert rec.items == [TITLES[i] for i in pos[r]]
        assert rec.scores == scores[r].tolist()                       # identical floats
        assert not rec.cold_start
    # exclude_seen against a numpy reference
    s64 = q.double().numpy() @ c.double().numpy().T
    for r, user in enumerate(users):
        masked = s64[r].copy()
        masked[seen_positions(interactions, user)] = -np.inf
        expected = [TITLES[i] for i in np.argsort(-masked, kind="stable")[:10]]
        assert bundle.recommend({"user_id": user}, k=10).items == expected


def test_manifest_describes_the_bundle(bundle_dir):
    manifest = read_manifest(bundle_dir)
    assert manifest["format_version"] == 2 and manifest["model_kind"] == "two_tower"
    assert manifest["embedding_dim"] == 8 and manifest["num_candidates"] == len(TITLES)
    assert manifest["torch_version"] == torch.__version__ and manifest["created_at"].endswith("+00:00")
    assert manifest["index"]["kind"] == "brute_force" and manifest["index"]["is_exact"]
    files = manifest["files"]
    assert {"query_features.json", "query_tower.json", "candidates/embeddings.npy", "seen/indptr.npy",
            "index/index.json"} <= set(files)
    assert all(len(entry["sha256"]) == 64 for entry in files.values())
    for name in files:   # no file needs pickle
        if name.endswith(".npy"):
            np.load(bundle_dir / name, allow_pickle=False)


def _copy(bundle_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle_dir, target)
    return target


@pytest.mark.parametrize("name", ["manifest.json", "query_features.json", "query_tower.json",
                                  "WEIGHTS", "candidates/identifiers.npy",
                                  "candidates/embeddings.npy", "seen/indices.npy", "index/index.json",
                                  "index/ids.npy"])
def test_one_changed_byte_is_refused(bundle_dir, tmp_path, name):
    target = _copy(bundle_dir, tmp_path)
    if name == "WEIGHTS":         # .safetensors, or .npz without safetensors installed
        name = read_manifest(bundle_dir)["query"]["weights"]
    path = target / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="modified|corrupt|mismatch|refusing"):
        load_bundle(target)


def test_truncated_and_missing_files_are_refused(bundle_dir, tmp_path):
    target = _copy(bundle_dir, tmp_path)
    path = target / "candidates" / "embeddings.npy"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ChecksumError, match="truncated"):
        load_bundle(target)
    path.unlink()
    with pytest.raises(ChecksumError, match="missing"):
        load_bundle(target)
    with pytest.raises(FileNotFoundError, match="not a recstack bundle"):
        load_bundle(tmp_path)


def test_cold_start_uses_the_oov_row(bundle_dir, model, features):
    bundle = load_bundle(bundle_dir)
    rec = bundle.recommend({"user_id": "u57"}, k=5)                 # not in the vocabulary
    assert rec.cold_start and rec.oov_fields == ["user_id"]
    with torch.no_grad():
        oov = model.query_tower(torch.tensor([0]))
    _, c = in_memory(model, features, ["u0"])
    scores, pos = BruteForce().build(None, c).search(oov, k=5)
    assert rec.items == [TITLES[i] for i in pos[0]] and rec.scores == scores[0].tolist()
    # In vocabulary but never seen in interactions: not cold, no exclusions.
    warm = bundle.recommend({"user_id": "u52"}, k=5)
    assert not warm.cold_start


def test_similar_items(bundle_dir, model, features):
    bundle = load_bundle(bundle_dir)
    _, c = in_memory(model, features, ["u0"])
    c64 = c.double().numpy()
    i = TITLES.index("Face/Off (1997)")
    s = c64 @ c64[i]
    s[i] = -np.inf
    expected = [TITLES[j] for j in np.argsort(-s, kind="stable")[:7]]
    rec = bundle.similar("Face/Off (1997)", k=7)
    assert rec.items == expected and "Face/Off (1997)" not in rec.items
    with pytest.raises(UnknownItemError, match="unknown item"):
        bundle.similar("Not a movie")


def test_allow_and_exclude(bundle_dir, model, features, interactions):
    bundle = load_bundle(bundle_dir)
    allow = TITLES[:30]
    q, c = in_memory(model, features, ["u5"])
    s = (q.double().numpy() @ c.double().numpy().T)[0]
    ok = np.zeros(len(TITLES), dtype=bool)
    ok[:30] = True
    ok[seen_positions(interactions, "u5")] = False
    ok[[TITLES.index(t) for t in TITLES[:3]]] = False
    idx = np.flatnonzero(ok)
    expected = [TITLES[j] for j in idx[np.argsort(-s[idx], kind="stable")]]
    rec = bundle.recommend({"user_id": "u5"}, k=50, allow=allow, exclude=TITLES[:3] + ["unknown ok"])
    assert rec.items == expected                                    # fewer than k remain
    with pytest.raises(UnknownItemError, match="allow-list"):
        bundle.recommend({"user_id": "u5"}, allow=["nope"])


def test_exclude_seen_and_exclude_combine_per_query(bundle_dir, model, features, interactions):
    """A batch mixing a key with seen items, an unknown key and a repeat: each row excludes its own
    seen items plus the request's exclude list (numpy reference)."""
    bundle = load_bundle(bundle_dir)
    users = ["u5", "not a user", "u5", "u7"]
    q, c = in_memory(model, features, users)
    s = q.double().numpy() @ c.double().numpy().T
    recs = bundle.recommend([{"user_id": u} for u in users], k=12, exclude=TITLES[:2])
    for r, user in enumerate(users):
        masked = s[r].copy()
        masked[seen_positions(interactions, user) + [0, 1]] = -np.inf
        assert recs[r].items == [TITLES[i] for i in np.argsort(-masked, kind="stable")[:12]]


def test_query_validation(bundle_dir):
    bundle = load_bundle(bundle_dir)
    with pytest.raises(ConfigError, match="brute_force"):
        load_bundle(bundle_dir, index="brute_forse")
    with pytest.raises(UnknownFieldError, match="unknown field"):
        bundle.recommend({"user_id": "u1", "age": 3})
    with pytest.raises(UnknownFieldError, match="lacks"):
        bundle.recommend({})
    with pytest.raises(DataError, match="k must be"):
        bundle.recommend({"user_id": "u1"}, k=0)


def test_faiss_bundle_matches_an_in_memory_faiss_index(tmp_path, model, features, movies, interactions):
    pytest.importorskip("faiss")
    from recstack.index import FaissIVF
    options = {"nlist": 16, "nprobe": 2, "seed": 3}
    path = export(model, tmp_path / "f", candidates=movies, features=features, seen=interactions,
                  index="faiss", index_options=options, tune_recall=None)
    bundle = load_bundle(path)
    users = ["u1", "u2", "u57"]
    q, c = in_memory(model, features, users)
    scores, pos = FaissIVF(**options).build(None, c).search(q, k=10)
    recs = bundle.recommend([{"user_id": u} for u in users], k=10, exclude_seen=False)
    for r, rec in enumerate(recs):
        assert rec.items == [TITLES[i] for i in pos[r]] and rec.scores == scores[r].tolist()
    # The tuned export records the measured recall; the exact override searches exactly.
    tuned = export(model, tmp_path / "t", candidates=movies, features=features, index="faiss",
                   index_options={"nlist": 16, "nprobe": 1}, tune_recall=0.9, tune_k=20)
    manifest = read_manifest(tuned)
    assert manifest["index"]["recall"]["value"] >= 0.9 and manifest["index"]["tuning"]["target_met"]
    exact = load_bundle(tuned, index="brute_force")
    assert exact.index.is_exact
    s_ref, p_ref = BruteForce().build(None, c).search(q, k=10)
    assert exact.recommend({"user_id": "u1"}, k=10).items == [TITLES[i] for i in p_ref[0]]
    # An override names a kind by its registered name or any alias of it.
    assert load_bundle(tuned, index="exact").index.is_exact
    assert load_bundle(tuned, index="faiss").index.kind == "faiss_ivf"     # the bundle's own index


class MultiTask(nn.Module):
    """A ranking + retrieval model shaped like the TFRS multi-task tutorial."""

    def __init__(self, n_users, n_items):
        super().__init__()
        self.query_tower = Embedding(n_users, 6)
        self.candidate_tower = Embedding(n_items, 6)
        self.rating_model = MLP(12, [16, 1])
        self.query_inputs, self.candidate_inputs = "user_id", "movie_title"


def test_rating_head_predictions(tmp_path, features, movies):
    torch.manual_seed(1)
    model = MultiTask(features["user_id"].vocabulary_size(), features["movie_title"].vocabulary_size())
    path = export(model, tmp_path / "m", candidates=movies, features=features)
    bundle = load_bundle(path)
    assert bundle.manifest["model_kind"] == "multitask" and bundle.has_rating_head
    items = TITLES[:4]
    with torch.no_grad():
        u = model.query_tower(features["user_id"].transform(["u7"])).expand(4, -1)
        c = model.candidate_tower(features["movie_title"].transform(items))
        expected = model.rating_model(torch.cat([u, c], 1)).reshape(-1).tolist()
    assert bundle.predict_rating({"user_id": "u7"}, items) == expected
    pairs = bundle.predict_rating([{"user_id": "u7"}] * 2, items[:2])
    assert pairs == pytest.approx(expected[:2], rel=1e-5)       # batch size changes matmul rounding
    with pytest.raises(ConfigError, match="no rating head"):
        load_bundle(_two_tower_path(tmp_path, features, movies)).predict_rating({"user_id": "u7"}, items)


def _two_tower_path(tmp_path, features, movies):
    spec = ServingSpec(query_tower=Embedding(features["user_id"].vocabulary_size(), 4), query_inputs="user_id",
                       candidate_tower=Embedding(features["movie_title"].vocabulary_size(), 4),
                       candidate_inputs="movie_title")
    return export(spec, tmp_path / "plain", candidates=movies, features=features)


def test_raw_towers_without_a_feature_set(tmp_path):
    torch.manual_seed(2)
    users = USERS[:20]
    query = nn.Sequential(StringLookup(vocabulary=users), Embedding(21, 4))
    cand = nn.Sequential(StringLookup(vocabulary=TITLES), Embedding(len(TITLES) + 1, 4))
    spec = ServingSpec(query, "user_id", cand, "movie_title")
    path = export(spec, tmp_path / "raw", candidates={"movie_title": TITLES})
    bundle = load_bundle(path)
    assert bundle.manifest["query"]["features"] is None
    with torch.no_grad():
        q = query(["u3"])
        c = cand(TITLES)
    scores, pos = BruteForce().build(None, c).search(q, k=5)
    rec = bundle.recommend({"user_id": "u3"}, k=5)
    assert rec.items == [TITLES[i] for i in pos[0]] and not rec.cold_start
    assert bundle.recommend({"user_id": "stranger"}, k=5).cold_start


def test_weights_fall_back_to_npz_without_safetensors(tmp_path, model, features, movies, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)     # import fails
    path = export(model, tmp_path / "npz", candidates=movies, features=features)
    assert (path / "query_tower.npz").exists()
    monkeypatch.undo()
    bundle = load_bundle(path)
    q, c = in_memory(model, features, ["u9"])
    _, pos = BruteForce().build(None, c).search(q, k=4)
    assert bundle.recommend({"user_id": "u9"}, k=4, exclude_seen=False).items == [TITLES[i] for i in pos[0]]


def test_export_errors(tmp_path, model, features, movies, bundle_dir):
    with pytest.raises(ConfigError, match="already exists"):
        export(model, bundle_dir, candidates=movies, features=features)
    dup = pd.DataFrame({"movie_title": TITLES[:5] + TITLES[:1]})
    with pytest.raises(DataError, match="unique"):
        export(model, tmp_path / "dup", candidates=dup, features=features)
    with pytest.raises(ConfigError, match="serving_spec"):
        export(nn.Linear(2, 2), tmp_path / "bad", candidates=movies)
    assert not (tmp_path / "dup").exists() and not list(tmp_path.glob(".*tmp"))


def test_overwrite_replaces_atomically(tmp_path, model, features, movies):
    path = export(model, tmp_path / "b", candidates=movies, features=features)
    first = read_manifest(path)["manifest_sha256"]
    export(model, path, candidates=movies, features=features, overwrite=True, extra={"v": 2})
    manifest = read_manifest(path)
    assert manifest["manifest_sha256"] != first and manifest["extra"] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert json.loads((path / "manifest.json").read_text())["format"] == "recstack.bundle"


def test_fast_lookups_match_the_layers():
    from recstack.features import IntegerLookup
    from recstack.serving.query import SortedKeys, _FastLookup
    rng = np.random.default_rng(0)
    vocab = [f"tok{i}" for i in rng.permutation(500)]
    layer = StringLookup(vocabulary=vocab)
    fast = _FastLookup(layer)
    values = [f"tok{i}" for i in rng.integers(0, 700, 200)]          # ~30% unknown
    assert torch.equal(fast(values), layer.transform(values))
    mixed = ["tok3", 17, 2.5]                                          # non-str values: the layer's own path
    assert torch.equal(fast(mixed), layer.transform(mixed))
    ints = IntegerLookup(vocabulary=[50, 7, 900])
    assert torch.equal(_FastLookup(ints)([7, 900, 3, 50]), ints.transform([7, 900, 3, 50]))
    keys = SortedKeys(np.array(["b", "a", "c"]))
    assert keys.lookup(np.array(["c", "zz", "a"])).tolist() == [2, -1, 1]
    assert SortedKeys(np.array([5, 3])).lookup(np.array(["x"], dtype=object)).tolist() == [-1]


def test_export_restores_training_mode(tmp_path, features, movies):
    spec = ServingSpec(Embedding(features["user_id"].vocabulary_size(), 4), "user_id",
                       Embedding(features["movie_title"].vocabulary_size(), 4), "movie_title",
                       rating_head=MLP(8, [1]), kind="ranking")
    spec.query_tower.train()
    spec.rating_head.train()
    spec.candidate_tower.train()
    export(spec, tmp_path / "modes", candidates=movies, features=features)
    assert spec.query_tower.training and spec.rating_head.training and spec.candidate_tower.training
